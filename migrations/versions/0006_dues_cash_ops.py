"""collection sheets, cash hand-overs, waivers, joining fees, reminders (dues issue)

Revision ID: 0006
Revises: 0005
Adds the plan's joining fee (0 = none; the seeded plans have none), collection
sheets, cash hand-overs (one open per collector, by a unique column), dues
holidays and hardship waivers (reason encrypted), members' opt-out of dues
messages, and dues notices (receipt SMS and monthly reminders, unique per
member, kind and reference).
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dues_plan', sa.Column('joining_fee_minor', sa.BigInteger(), nullable=False, server_default='0'))
    op.add_column('dues_plan', sa.Column('joining_fee_currency', sqlmodel.sql.sqltypes.AutoString(length=3),
                                         nullable=False, server_default='INR'))

    op.create_table('collection_sheet',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('collector_user_id', sa.Integer(), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('applied_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['collector_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('collection_sheet', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_collection_sheet_collector_user_id'), ['collector_user_id'], unique=False)

    op.create_table('cash_handover',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('collector_user_id', sa.Integer(), nullable=False),
    sa.Column('treasurer_user_id', sa.Integer(), nullable=False),
    sa.Column('expected_minor', sa.BigInteger(), nullable=False),
    sa.Column('counted_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('as_of_seq', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('open_collector_id', sa.Integer(), nullable=True),
    sa.Column('confirmed_by_collector_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('confirmed_by_treasurer_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('cancelled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.CheckConstraint('counted_minor >= 0', name='ck_cash_handover_counted'),
    sa.ForeignKeyConstraint(['collector_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['treasurer_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('open_collector_id')
    )
    with op.batch_alter_table('cash_handover', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cash_handover_collector_user_id'), ['collector_user_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cash_handover_treasurer_user_id'), ['treasurer_user_id'], unique=False)

    op.create_table('dues_waiver',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('from_month', sa.Date(), nullable=False),
    sa.Column('months', sa.Integer(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('reason_enc', sa.Text(), nullable=False),
    sa.Column('granted_by_user_id', sa.Integer(), nullable=False),
    sa.Column('granted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('revoked_by_user_id', sa.Integer(), nullable=True),
    sa.Column('revoke_reason_enc', sa.Text(), nullable=True),
    sa.Column('revoke_entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.CheckConstraint('months > 0', name='ck_dues_waiver_months'),
    sa.CheckConstraint('amount_minor >= 0', name='ck_dues_waiver_amount'),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['granted_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['revoke_entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['revoked_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dues_waiver', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dues_waiver_member_id'), ['member_id'], unique=False)

    op.create_table('dues_message_opt_out',
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('member_id')
    )

    op.create_table('dues_notice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('ref', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('channel', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('member_id', 'kind', 'ref', name='uq_dues_notice')
    )
    with op.batch_alter_table('dues_notice', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dues_notice_member_id'), ['member_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dues_notice', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dues_notice_member_id'))
    op.drop_table('dues_notice')
    op.drop_table('dues_message_opt_out')
    with op.batch_alter_table('dues_waiver', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dues_waiver_member_id'))
    op.drop_table('dues_waiver')
    with op.batch_alter_table('cash_handover', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cash_handover_treasurer_user_id'))
        batch_op.drop_index(batch_op.f('ix_cash_handover_collector_user_id'))
    op.drop_table('cash_handover')
    with op.batch_alter_table('collection_sheet', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_collection_sheet_collector_user_id'))
    op.drop_table('collection_sheet')
    # Plain ALTER TABLE (SQLite 3.35+ and PostgreSQL): a batch copy of dues_plan would have to drop a
    # table that dues_rate and dues_account still point at.
    op.execute('ALTER TABLE dues_plan DROP COLUMN joining_fee_currency')
    op.execute('ALTER TABLE dues_plan DROP COLUMN joining_fee_minor')
