"""ledger

Revision ID: 0003
Revises: 0002
The double-entry ledger: chart of accounts, journal entries, postings, the chain
head, and the triggers by which the database itself keeps the books (see
LEDGER_RULES below).
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from migrations.helpers import GENESIS, append_only, drop_append_only


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# How the database keeps the books, on both engines (UPDATE and DELETE of entries
# and postings are refused by migrations.helpers.append_only):
#
# 1. An entry's postings are inserted first (their foreign key to the entry is
#    DEFERRABLE INITIALLY DEFERRED, so a posting whose header never comes fails
#    at COMMIT), then the header. The header's BEFORE INSERT trigger refuses it
#    unless it has two or more postings and they sum to zero in each currency.
#    SQLite has no deferred triggers, so the check cannot wait for COMMIT; it
#    runs at the one moment an entry becomes real instead.
# 2. A posting's BEFORE INSERT trigger refuses it when its entry header already
#    exists: a posted entry is sealed, so (1) held for its whole life. It also
#    refuses a posting whose currency is not its account's.
# 3. An account's code and currency never change (its name and type may): entries
#    hash the code, and their postings were checked against the currency.
#
# PostgreSQL uses the same scheme in plpgsql rather than django-hordak's deferred
# constraint trigger, so that both engines refuse the same statements at the same
# moment and the application sees one behaviour. Under READ COMMITTED a posting
# for an entry that another transaction is posting could slip past the sealed
# check before that transaction commits; the posting trigger therefore takes a
# transaction-scoped advisory lock on the entry id, which makes writers of one
# entry wait for each other, and its later queries (fresh snapshots inside a
# volatile function) then see the committed header.
UNBALANCED_FEW = "journal entry is unbalanced: it needs at least two postings"
UNBALANCED_SUM = "journal entry is unbalanced: its postings do not sum to zero in each currency"
SEALED = "journal entry is sealed: postings cannot be added to a posted entry"
WRONG_CURRENCY = "posting currency differs from the currency of its account"
ACCOUNT_FIXED = "ledger account code and currency cannot change"

LEDGER_RULES = {
    "sqlite": [
        f"""CREATE TRIGGER journal_entry_balanced BEFORE INSERT ON journal_entry BEGIN
            SELECT RAISE(ABORT, '{UNBALANCED_FEW}')
             WHERE (SELECT count(*) FROM posting WHERE entry_id = NEW.id) < 2;
            SELECT RAISE(ABORT, '{UNBALANCED_SUM}')
             WHERE EXISTS (SELECT 1 FROM posting WHERE entry_id = NEW.id
                            GROUP BY currency HAVING sum(amount_minor) <> 0);
        END""",
        f"""CREATE TRIGGER posting_sealed BEFORE INSERT ON posting BEGIN
            SELECT RAISE(ABORT, '{SEALED}')
             WHERE EXISTS (SELECT 1 FROM journal_entry WHERE id = NEW.entry_id);
            SELECT RAISE(ABORT, '{WRONG_CURRENCY}')
             WHERE NOT EXISTS (SELECT 1 FROM ledger_account WHERE id = NEW.account_id AND currency = NEW.currency);
        END""",
        f"""CREATE TRIGGER ledger_account_fixed BEFORE UPDATE OF code, currency ON ledger_account
            WHEN NEW.code IS NOT OLD.code OR NEW.currency IS NOT OLD.currency BEGIN
            SELECT RAISE(ABORT, '{ACCOUNT_FIXED}');
        END""",
    ],
    "postgresql": [
        f"""CREATE FUNCTION journal_entry_check_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF (SELECT count(*) FROM posting WHERE entry_id = NEW.id) < 2 THEN
                RAISE EXCEPTION '{UNBALANCED_FEW} (%)', NEW.id USING ERRCODE = 'check_violation';
            END IF;
            IF EXISTS (SELECT 1 FROM posting WHERE entry_id = NEW.id
                        GROUP BY currency HAVING sum(amount_minor) <> 0) THEN
                RAISE EXCEPTION '{UNBALANCED_SUM} (%)', NEW.id USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER journal_entry_balanced BEFORE INSERT ON journal_entry
           FOR EACH ROW EXECUTE FUNCTION journal_entry_check_balanced()""",
        f"""CREATE FUNCTION posting_check_open() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_advisory_xact_lock(hashtextextended('journal_entry:' || NEW.entry_id, 0));
            IF EXISTS (SELECT 1 FROM journal_entry WHERE id = NEW.entry_id) THEN
                RAISE EXCEPTION '{SEALED} (%)', NEW.entry_id USING ERRCODE = 'check_violation';
            END IF;
            IF NOT EXISTS (SELECT 1 FROM ledger_account WHERE id = NEW.account_id AND currency = NEW.currency) THEN
                RAISE EXCEPTION '{WRONG_CURRENCY} (%)', NEW.currency USING ERRCODE = 'check_violation';
            END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER posting_sealed BEFORE INSERT ON posting
           FOR EACH ROW EXECUTE FUNCTION posting_check_open()""",
        f"""CREATE FUNCTION ledger_account_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{ACCOUNT_FIXED} (%)', OLD.code USING ERRCODE = 'check_violation'; END $$""",
        """CREATE TRIGGER ledger_account_fixed BEFORE UPDATE OF code, currency ON ledger_account FOR EACH ROW
           WHEN (NEW.code IS DISTINCT FROM OLD.code OR NEW.currency IS DISTINCT FROM OLD.currency)
           EXECUTE FUNCTION ledger_account_refuse_change()""",
    ],
}

DROP_LEDGER_RULES = {
    "sqlite": [
        "DROP TRIGGER IF EXISTS ledger_account_fixed",
        "DROP TRIGGER IF EXISTS posting_sealed",
        "DROP TRIGGER IF EXISTS journal_entry_balanced",
    ],
    "postgresql": [
        "DROP TRIGGER IF EXISTS ledger_account_fixed ON ledger_account",
        "DROP FUNCTION IF EXISTS ledger_account_refuse_change()",
        "DROP TRIGGER IF EXISTS posting_sealed ON posting",
        "DROP FUNCTION IF EXISTS posting_check_open()",
        "DROP TRIGGER IF EXISTS journal_entry_balanced ON journal_entry",
        "DROP FUNCTION IF EXISTS journal_entry_check_balanced()",
    ],
}


def upgrade() -> None:
    # ### commands auto generated by Alembic - please adjust! ###
    op.create_table('ledger_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ledger_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_account_code'), ['code'], unique=True)

    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('last_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('journal_entry',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('idempotency_key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('effective_date', sa.Date(), nullable=False),
    sa.Column('posted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('member_id', sa.Integer(), nullable=True),
    sa.Column('reverses_entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('content_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('prev_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['reverses_entry_id'], ['journal_entry.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key'),
    sa.UniqueConstraint('reverses_entry_id'),
    sa.UniqueConstraint('seq')
    )
    with op.batch_alter_table('journal_entry', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_journal_entry_effective_date'), ['effective_date'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_entry_kind'), ['kind'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_entry_member_id'), ['member_id'], unique=False)

    op.create_table('posting',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('entry_id', sa.String(length=36), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.CheckConstraint('amount_minor <> 0', name='ck_posting_amount_nonzero'),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_account.id'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], initially='DEFERRED', deferrable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('posting', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_posting_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_posting_entry_id'), ['entry_id'], unique=False)

    # ### end Alembic commands ###
    for table in ("journal_entry", "posting"):
        append_only(table)
    for statement in LEDGER_RULES[op.get_bind().dialect.name]:
        op.execute(statement)
    op.execute(f"INSERT INTO ledger_head (id, last_seq, last_hash) VALUES (1, 0, '{GENESIS}')")


def downgrade() -> None:
    for statement in DROP_LEDGER_RULES[op.get_bind().dialect.name]:
        op.execute(statement)
    for table in ("posting", "journal_entry"):
        drop_append_only(table)
    # ### commands auto generated by Alembic - please adjust! ###
    with op.batch_alter_table('posting', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_posting_entry_id'))
        batch_op.drop_index(batch_op.f('ix_posting_account_id'))

    op.drop_table('posting')
    with op.batch_alter_table('journal_entry', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_entry_member_id'))
        batch_op.drop_index(batch_op.f('ix_journal_entry_kind'))
        batch_op.drop_index(batch_op.f('ix_journal_entry_effective_date'))

    op.drop_table('journal_entry')
    op.drop_table('ledger_head')
    with op.batch_alter_table('ledger_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_account_code'))

    op.drop_table('ledger_account')
    # ### end Alembic commands ###
