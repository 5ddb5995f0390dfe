"""crisis team clock (dispatch performance)

Revision ID: 0009
Revises: 0008
A change stamp on every team row and one clock row, so that a web process can
keep the team table in memory for dispatch decisions and bring it up to date with
one small query (the rows stamped after the version it holds) instead of reading
every team in the search box for every incident (crisis/teamcache.py).

On SQLite the database stamps the rows itself (triggers, whoever writes: the app,
the CLI, plain SQL). SQLite has one writer, so stamps are given in commit order
and "every row stamped after v" is exact. PostgreSQL gets the table and column
but no triggers: there a global clock row would make every team change of every
process wait for each other, and its indexed box query is fast enough.
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_STAMP = """
    UPDATE teamclock SET version = version + 1 WHERE id = 1;
    UPDATE team SET version = (SELECT version FROM teamclock WHERE id = 1) WHERE id = NEW.id;
"""
SQLITE_TRIGGERS = {
    "team_stamp_insert": f"CREATE TRIGGER team_stamp_insert AFTER INSERT ON team BEGIN {_STAMP} END",
    # The trigger's own stamp changes `version`, so the WHEN clause keeps it from stamping twice.
    "team_stamp_update": f"CREATE TRIGGER team_stamp_update AFTER UPDATE ON team WHEN NEW.version = OLD.version "
                         f"BEGIN {_STAMP} END",
    # A removed team cannot be described by a stamp: a new epoch tells every process to reload.
    "team_stamp_delete": "CREATE TRIGGER team_stamp_delete AFTER DELETE ON team BEGIN "
                         "UPDATE teamclock SET version = version + 1, epoch = epoch + 1 WHERE id = 1; END",
}


def upgrade() -> None:
    op.create_table('teamclock',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute("INSERT INTO teamclock (id, version, epoch) VALUES (1, 0, 0)")
    with op.batch_alter_table('team', schema=None) as batch_op:
        batch_op.add_column(sa.Column('version', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.create_index(batch_op.f('ix_team_version'), ['version'], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        for sql in SQLITE_TRIGGERS.values():
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table('team', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_team_version'))
        batch_op.drop_column('version')
    op.drop_table('teamclock')
