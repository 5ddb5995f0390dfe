"""welfare schemes, claims and payouts (welfare issue)

Revision ID: 0007
Revises: 0006
Schemes and their dated rule versions, claims with approvals and a timeline,
payouts (each with its ledger entry) and encrypted claim documents. Seeds the
standard schemes (sickness, accident, death/funeral support paid to the
nominee, old age, unemployment, children's education, transport to a clinic)
with rules in force from 2000-01-01, so every event date has rules.
"""
import datetime as dt

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('welfare_scheme',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('pays_nominee', sa.Boolean(), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('welfare_scheme', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_scheme_code'), ['code'], unique=True)

    op.create_table('welfare_rule_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scheme_id', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('min_membership_months', sa.Integer(), nullable=False),
    sa.Column('min_paid_months', sa.Integer(), nullable=False),
    sa.Column('waiting_days', sa.Integer(), nullable=False),
    sa.Column('benefit_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('max_claims_per_year', sa.Integer(), nullable=True),
    sa.Column('yearly_budget_minor', sa.BigInteger(), nullable=True),
    sa.Column('evidence', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
    sa.Column('approvals_required', sa.Integer(), nullable=False),
    sa.Column('approval_threshold_minor', sa.BigInteger(), nullable=False),
    sa.Column('approvals_above_threshold', sa.Integer(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.CheckConstraint('amount_minor > 0', name='ck_welfare_rule_amount_positive'),
    sa.CheckConstraint('approvals_required >= 1 AND approvals_above_threshold >= 1', name='ck_welfare_rule_approvals'),
    sa.CheckConstraint('min_membership_months >= 0 AND min_paid_months >= 0 AND min_paid_months <= 12 AND waiting_days >= 0', name='ck_welfare_rule_limits'),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['scheme_id'], ['welfare_scheme.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scheme_id', 'effective_from', name='uq_welfare_rule_scheme_from')
    )
    with op.batch_alter_table('welfare_rule_version', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_rule_version_scheme_id'), ['scheme_id'], unique=False)

    op.create_table('welfare_claim',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('member_id', sa.Integer(), nullable=False),
    sa.Column('branch_id', sa.Integer(), nullable=False),
    sa.Column('scheme_id', sa.Integer(), nullable=False),
    sa.Column('rule_version_id', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('event_date', sa.Date(), nullable=False),
    sa.Column('event_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('claimed_minor', sa.BigInteger(), nullable=True),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('approvals_needed', sa.Integer(), nullable=False),
    sa.Column('evidence_kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('attester_member_id', sa.Integer(), nullable=True),
    sa.Column('attester_user_id', sa.Integer(), nullable=True),
    sa.Column('details_enc', sa.Text(), nullable=True),
    sa.Column('rejection_reason_enc', sa.Text(), nullable=True),
    sa.Column('appeal_status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('appeal_reason_enc', sa.Text(), nullable=True),
    sa.Column('appeal_decided_by_user_id', sa.Integer(), nullable=True),
    sa.Column('filed_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('paid_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('withdrawn_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount_minor > 0', name='ck_welfare_claim_amount_positive'),
    sa.ForeignKeyConstraint(['appeal_decided_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['attester_member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['attester_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['branch_id'], ['branch.id'], ),
    sa.ForeignKeyConstraint(['filed_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['member_id'], ['member.id'], ),
    sa.ForeignKeyConstraint(['rule_version_id'], ['welfare_rule_version.id'], ),
    sa.ForeignKeyConstraint(['scheme_id'], ['welfare_scheme.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_key')
    )
    with op.batch_alter_table('welfare_claim', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_claim_branch_id'), ['branch_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_welfare_claim_member_id'), ['member_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_welfare_claim_reference'), ['reference'], unique=True)
        batch_op.create_index(batch_op.f('ix_welfare_claim_scheme_id'), ['scheme_id'], unique=False)
        batch_op.create_index('ix_welfare_claim_status_branch', ['status', 'branch_id'], unique=False)

    op.create_table('welfare_approval',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('claim_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['claim_id'], ['welfare_claim.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('claim_id', 'user_id', name='uq_welfare_approval_officer')
    )
    with op.batch_alter_table('welfare_approval', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_approval_claim_id'), ['claim_id'], unique=False)

    op.create_table('welfare_claim_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('claim_id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.ForeignKeyConstraint(['actor_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['claim_id'], ['welfare_claim.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('welfare_claim_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_claim_event_claim_id'), ['claim_id'], unique=False)

    op.create_table('welfare_document',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('claim_id', sa.Integer(), nullable=False),
    sa.Column('content_type', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('data_enc', sa.Text(), nullable=False),
    sa.Column('uploaded_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['claim_id'], ['welfare_claim.id'], ),
    sa.ForeignKeyConstraint(['uploaded_by_user_id'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('welfare_document', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_document_claim_id'), ['claim_id'], unique=False)

    op.create_table('welfare_payout',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('claim_id', sa.Integer(), nullable=False),
    sa.Column('scheme_id', sa.Integer(), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('method', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('reference', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('paid_on', sa.Date(), nullable=False),
    sa.Column('paid_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('reversal_entry_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('reversed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.CheckConstraint('amount_minor > 0', name='ck_welfare_payout_positive'),
    sa.ForeignKeyConstraint(['claim_id'], ['welfare_claim.id'], ),
    sa.ForeignKeyConstraint(['entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['paid_by_user_id'], ['user_account.id'], ),
    sa.ForeignKeyConstraint(['reversal_entry_id'], ['journal_entry.id'], ),
    sa.ForeignKeyConstraint(['scheme_id'], ['welfare_scheme.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('entry_id'),
    sa.UniqueConstraint('reversal_entry_id')
    )
    with op.batch_alter_table('welfare_payout', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_welfare_payout_claim_id'), ['claim_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_welfare_payout_paid_on'), ['paid_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_welfare_payout_scheme_id'), ['scheme_id'], unique=False)

    _seed_schemes()


# (code, name, pays_nominee, benefit kind, amount or cap (paise), min months of membership, min months paid
#  of the last twelve, waiting days after joining, claims per year, yearly budget (paise), evidence)
STANDARD_SCHEMES = (
    ("sickness", "Sickness support", False, "actual_cost", 500000, 6, 6, 90, 2, 50000000,
     "document peer_attestation collector_attestation"),
    ("accident", "Accident support", False, "actual_cost", 1000000, 3, 3, 30, 2, 50000000,
     "document peer_attestation collector_attestation"),
    ("death", "Funeral support (paid to the nominee)", True, "fixed", 1000000, 6, 6, 180, 1, 30000000,
     "document peer_attestation collector_attestation"),
    ("old_age", "Old-age support", False, "fixed", 200000, 60, 10, 365, 4, 40000000,
     "document collector_attestation"),
    ("unemployment", "Unemployment support", False, "fixed", 150000, 12, 9, 180, 2, 30000000,
     "peer_attestation collector_attestation"),
    ("education", "Children's education", False, "actual_cost", 500000, 12, 10, 365, 1, 50000000, "document"),
    ("clinic_transport", "Transport to a clinic", False, "actual_cost", 50000, 0, 1, 0, 12, 10000000,
     "document peer_attestation collector_attestation"),
)


def _seed_schemes() -> None:
    schemes = sa.table("welfare_scheme", sa.column("id", sa.Integer), sa.column("code", sa.String),
                       sa.column("name", sa.String), sa.column("description", sa.String),
                       sa.column("pays_nominee", sa.Boolean), sa.column("active", sa.Boolean),
                       sa.column("created_at", sqlmodel.sql.sqltypes.UTCDateTime()))
    rules = sa.table("welfare_rule_version", *(sa.column(name) for name in (
        "scheme_id", "effective_from", "min_membership_months", "min_paid_months", "waiting_days", "benefit_kind",
        "amount_minor", "currency", "max_claims_per_year", "yearly_budget_minor", "evidence", "approvals_required",
        "approval_threshold_minor", "approvals_above_threshold")),
        sa.column("created_at", sqlmodel.sql.sqltypes.UTCDateTime()))
    bind = op.get_bind()
    now = dt.datetime.now(dt.UTC)
    for (code, name, nominee, kind, amount, membership, paid, waiting, per_year, budget,
         evidence) in STANDARD_SCHEMES:
        bind.execute(schemes.insert().values(code=code, name=name, description="", pays_nominee=nominee,
                                             active=True, created_at=now))
        scheme_id = bind.execute(sa.select(schemes.c.id).where(schemes.c.code == code)).scalar_one()
        bind.execute(rules.insert().values(
            scheme_id=scheme_id, effective_from=dt.date(2000, 1, 1), min_membership_months=membership,
            min_paid_months=paid, waiting_days=waiting, benefit_kind=kind, amount_minor=amount, currency="INR",
            max_claims_per_year=per_year, yearly_budget_minor=budget, evidence=evidence, approvals_required=1,
            approval_threshold_minor=300000, approvals_above_threshold=2, created_at=now))


def downgrade() -> None:
    for table in ("welfare_payout", "welfare_document", "welfare_claim_event", "welfare_approval", "welfare_claim",
                  "welfare_rule_version", "welfare_scheme"):
        op.drop_table(table)
