"""card payments carry the joining fee they include

Revision ID: 0011
Revises: 0010
A card payment opened for a member who still owes her plan's joining fee asks
Stripe for the months and the fee: `card_payment.joining_fee_minor` is the part of
`amount_minor` that is the fee (0 for every payment made before this revision).
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('card_payment', sa.Column('joining_fee_minor', sa.BigInteger(), nullable=False,
                                            server_default='0'))


def downgrade() -> None:
    op.execute('ALTER TABLE card_payment DROP COLUMN joining_fee_minor')
