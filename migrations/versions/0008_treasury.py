"""period close, checkpoints, bank reconciliation (treasurer's issue)

Revision ID: 0008
Revises: 0007
Closed accounting periods (and the triggers by which the database refuses a
journal entry dated in a closed month, on both engines), signed checkpoints of
the chain heads, and imported bank-statement lines.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from migrations.helpers import append_only, drop_append_only


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# A journal entry whose effective date falls in a closed month is refused by the
# database itself, whoever inserts it. Closing a month locks the ledger head
# first (every posting takes it), so a posting and a close never race.
PERIOD_CLOSED = "journal entry falls in a closed accounting period"

PERIOD_RULES = {
    "sqlite": [
        f"""CREATE TRIGGER journal_entry_period_open BEFORE INSERT ON journal_entry BEGIN
            SELECT RAISE(ABORT, '{PERIOD_CLOSED}')
             WHERE EXISTS (SELECT 1 FROM accounting_period WHERE month = substr(NEW.effective_date, 1, 7));
        END""",
    ],
    "postgresql": [
        f"""CREATE FUNCTION journal_entry_check_period_open() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM accounting_period WHERE month = to_char(NEW.effective_date, 'YYYY-MM')) THEN
                RAISE EXCEPTION '{PERIOD_CLOSED} (%)', to_char(NEW.effective_date, 'YYYY-MM')
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER journal_entry_period_open BEFORE INSERT ON journal_entry
           FOR EACH ROW EXECUTE FUNCTION journal_entry_check_period_open()""",
    ],
}

DROP_PERIOD_RULES = {
    "sqlite": ["DROP TRIGGER IF EXISTS journal_entry_period_open"],
    "postgresql": [
        "DROP TRIGGER IF EXISTS journal_entry_period_open ON journal_entry",
        "DROP FUNCTION IF EXISTS journal_entry_check_period_open()",
    ],
}


def upgrade() -> None:
    op.create_table('accounting_period',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('month', sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
    sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('closed_by_user_id', sa.Integer(), nullable=True),
    sa.Column('reconciled_note', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('open_differences', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['closed_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('month')
    )
    op.create_table('ledger_checkpoint',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('month', sqlmodel.sql.sqltypes.AutoString(length=7), nullable=False),
    sa.Column('made_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('made_by_user_id', sa.Integer(), nullable=True),
    sa.Column('ledger_seq', sa.Integer(), nullable=False),
    sa.Column('ledger_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('audit_id', sa.Integer(), nullable=False),
    sa.Column('audit_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('signature', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.ForeignKeyConstraint(['made_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('month')
    )
    op.create_table('bank_import',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('imported_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('imported_by_user_id', sa.Integer(), nullable=True),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['imported_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    op.create_table('bank_line',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('booked_on', sa.Date(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('description_enc', sa.Text(), nullable=True),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('matched_how', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('matched_by_user_id', sa.Integer(), nullable=True),
    sa.Column('matched_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['import_id'], ['bank_import.id'], ),
    sa.ForeignKeyConstraint(['matched_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('entry_id'),
    sa.UniqueConstraint('import_id', 'line_no', name='uq_bank_line_import_line')
    )
    with op.batch_alter_table('bank_line', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bank_line_booked_on'), ['booked_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_bank_line_import_id'), ['import_id'], unique=False)

    # A closed month stays closed; a checkpoint, once made, is never rewritten.
    for table in ("accounting_period", "ledger_checkpoint"):
        append_only(table)
    for statement in PERIOD_RULES[op.get_bind().dialect.name]:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_PERIOD_RULES[op.get_bind().dialect.name]:
        op.execute(statement)
    for table in ("ledger_checkpoint", "accounting_period"):
        drop_append_only(table)
    with op.batch_alter_table('bank_line', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bank_line_import_id'))
        batch_op.drop_index(batch_op.f('ix_bank_line_booked_on'))
    op.drop_table('bank_line')
    op.drop_table('bank_import')
    op.drop_table('ledger_checkpoint')
    op.drop_table('accounting_period')
