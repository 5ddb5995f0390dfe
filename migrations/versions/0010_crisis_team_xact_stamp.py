"""crisis team stamps on PostgreSQL (dispatch performance)

Revision ID: 0010
Revises: 0009
On PostgreSQL every inserted or updated team row is stamped with the id of the
transaction that wrote it (`pg_current_xact_id()`), and a deleted or truncated
team moves the clock's epoch, so that a web process can keep the team table in
memory and bring it up to date with one small query: the rows whose writer the
snapshot it last read in does not see (crisis/teamcache.py). Unlike a counter, a
transaction id needs no shared row: team writers never wait for each other.
SQLite keeps migration 0009's counter (one writer: stamps in commit order).
"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

PG_UP = [
    """CREATE FUNCTION team_xact_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.version := pg_current_xact_id()::text::bigint;
        RETURN NEW;
    END $$""",
    """CREATE FUNCTION team_epoch_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE teamclock SET epoch = epoch + 1 WHERE id = 1;
        RETURN NULL;
    END $$""",
    "CREATE TRIGGER team_xact_stamp BEFORE INSERT OR UPDATE ON team FOR EACH ROW EXECUTE FUNCTION team_xact_stamp()",
    "CREATE TRIGGER team_epoch_delete AFTER DELETE ON team FOR EACH STATEMENT EXECUTE FUNCTION team_epoch_bump()",
    "CREATE TRIGGER team_epoch_truncate AFTER TRUNCATE ON team FOR EACH STATEMENT EXECUTE FUNCTION team_epoch_bump()",
]
PG_DOWN = [
    "DROP TRIGGER IF EXISTS team_epoch_truncate ON team",
    "DROP TRIGGER IF EXISTS team_epoch_delete ON team",
    "DROP TRIGGER IF EXISTS team_xact_stamp ON team",
    "DROP FUNCTION IF EXISTS team_epoch_bump()",
    "DROP FUNCTION IF EXISTS team_xact_stamp()",
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sql in PG_UP:
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for sql in PG_DOWN:
            op.execute(sql)
