"""The one policy module: who may use which route, and which records they may see.

Every route of the app, HTML and API alike, is named in `RULES`; the app factory
wraps each endpoint with `guard`, and refuses to start if a route has no rule.
Branch limits are checked here too (`can_see_member`, `visible_branches`), so
services and routes never decide access on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from union.models import Role

STAFF = frozenset({Role.collector, Role.welfare_officer, Role.dispatcher, Role.crisis_responder,
                   Role.treasurer, Role.office_bearer})
# Staff who work with member records (search, member pages).
MEMBER_STAFF = frozenset({Role.collector, Role.welfare_officer, Role.office_bearer})
ALL_ROLES = frozenset(Role)
# Who audits the books: reports, reconciliation, checkpoints (closing a month is the treasurer's alone).
BOOKS = frozenset({Role.treasurer, Role.office_bearer})


@dataclass(frozen=True)
class Rule:
    """public: anyone; otherwise a logged-in principal holding one of `roles`
    (empty roles = any logged-in user)."""

    public: bool = False
    roles: frozenset = frozenset()
    csrf: bool = True  # False only for callers that authenticate otherwise (signed webhooks)

    def allows(self, principal: Principal | None) -> bool:
        if self.public:
            return True
        if principal is None:
            return False
        return not self.roles or bool(self.roles & principal.role_names)


PUBLIC = Rule(public=True)
LOGGED_IN = Rule()


def roles(*names: Role) -> Rule:
    return Rule(roles=frozenset(names))


RULES: dict[str, Rule] = {
    # Shell
    "index": PUBLIC,
    "healthz": PUBLIC,
    "openapi": PUBLIC,
    "static": PUBLIC,
    "language.set": PUBLIC,
    "auth.login": PUBLIC,
    "auth.member_login": PUBLIC,
    "auth.logout": PUBLIC,
    "home": LOGGED_IN,
    # Role home pages
    "home.member": roles(Role.member),
    "home.collector": roles(Role.collector),
    "home.welfare_officer": roles(Role.welfare_officer),
    "home.dispatcher": roles(Role.dispatcher),
    "home.crisis_responder": roles(Role.crisis_responder),
    "home.treasurer": roles(Role.treasurer),
    "home.office_bearer": roles(Role.office_bearer),
    # Members
    "members.join": PUBLIC,
    "members.joined": PUBLIC,
    "members.card": roles(Role.member),
    "members.search": Rule(roles=MEMBER_STAFF),
    "members.new": roles(Role.collector, Role.office_bearer),
    "members.detail": Rule(roles=MEMBER_STAFF),
    # Accounts
    "accounts.users": roles(Role.office_bearer),
    "accounts.end_sessions": roles(Role.office_bearer),
    # API
    "api.branches": PUBLIC,
    "api.me": LOGGED_IN,
    "api.members.create": roles(Role.collector, Role.office_bearer),
    "api.members.search": Rule(roles=MEMBER_STAFF),
    "api.members.get": Rule(roles=MEMBER_STAFF | {Role.member}),
    # Crisis: public intake (no login: callers may be anonymous and not members)
    "crisis.help": PUBLIC,
    "crisis.help_status": PUBLIC,
    "crisis.help_cancel": PUBLIC,
    "crisis.sw": PUBLIC,
    "crisis.manifest": PUBLIC,
    "api.crisis.incidents.create": PUBLIC,
    "api.crisis.incidents.status": PUBLIC,
    "api.crisis.places": PUBLIC,
    "api.push.vapid_key": PUBLIC,
    # Signed by the SMS/voice provider instead of a CSRF token (checked in the route).
    "crisis.twilio_sms": Rule(public=True, csrf=False),
    "crisis.twilio_voice": Rule(public=True, csrf=False),
    # Crisis: staff and teams
    "crisis.hotline": roles(Role.dispatcher),
    "crisis.board": roles(Role.dispatcher),
    "api.crisis.board": roles(Role.dispatcher),
    "crisis.team": roles(Role.crisis_responder),
    "api.crisis.my_offers": roles(Role.crisis_responder),
    "crisis.offer": roles(Role.crisis_responder),
    "crisis.offer_accept": roles(Role.crisis_responder),
    "crisis.offer_decline": roles(Role.crisis_responder),
    "api.crisis.offers.get": roles(Role.crisis_responder),
    "api.crisis.offers.accept": roles(Role.crisis_responder),
    "api.crisis.offers.decline": roles(Role.crisis_responder),
    "crisis.team_availability": roles(Role.crisis_responder, Role.dispatcher),
    "api.crisis.teams.availability": roles(Role.crisis_responder, Role.dispatcher),
    "api.crisis.teams.location": roles(Role.crisis_responder, Role.dispatcher),
    "api.crisis.teams.create": roles(Role.office_bearer, Role.dispatcher),
    "api.crisis.teams.list": roles(Role.office_bearer, Role.dispatcher),
    "crisis.incident": roles(Role.crisis_responder, Role.dispatcher),
    "crisis.incident_step": roles(Role.crisis_responder, Role.dispatcher),
    "crisis.incident_note": roles(Role.crisis_responder, Role.dispatcher),
    "api.crisis.incidents.step": roles(Role.crisis_responder, Role.dispatcher),
    "api.crisis.incidents.note": roles(Role.crisis_responder, Role.dispatcher),
    "api.push.subscribe": LOGGED_IN,
    "api.push.unsubscribe": LOGGED_IN,
    # Dues
    "dues.collect": roles(Role.collector),
    "dues.receipt": roles(Role.collector, Role.member, Role.office_bearer, Role.treasurer),
    "dues.me": roles(Role.member),
    "api.dues.payments.create": roles(Role.collector),
    "api.members.standing": Rule(roles=MEMBER_STAFF | {Role.member}),
    # Dues: card payments (Stripe)
    "dues.card": roles(Role.member),
    "dues.card_checkout": roles(Role.member),
    "dues.card_autopay": roles(Role.member),
    "dues.card_autopay_cancel": roles(Role.member),
    "dues.card_done": roles(Role.member),
    # Signed by Stripe instead of a CSRF token (checked on the raw body in the route).
    "dues.stripe_webhook": Rule(public=True, csrf=False),
    # Dues: collection sheets, hand-overs, waivers
    "dues.sheets": roles(Role.collector),
    "dues.sheet": roles(Role.collector),
    "dues.sheet_apply": roles(Role.collector),
    "dues.handover": roles(Role.collector),
    "dues.handover_cancel": roles(Role.collector),
    "dues.handovers": roles(Role.treasurer),
    "dues.handover_confirm": roles(Role.treasurer),
    "dues.messages": roles(Role.member),
    "dues.waivers": roles(Role.office_bearer),
    "dues.waiver_revoke": roles(Role.office_bearer),
    "api.dues.waivers.create": roles(Role.office_bearer),
    # Welfare (branch limits and who may decide: can_see_claim / can_decide_claim, checked in welfare.services)
    "welfare.me": roles(Role.member),
    "welfare.me_claim": roles(Role.member),
    "welfare.claims": roles(Role.welfare_officer, Role.office_bearer),
    "welfare.claim_new": roles(Role.collector, Role.welfare_officer, Role.office_bearer),
    "welfare.claim": roles(Role.member, Role.welfare_officer, Role.office_bearer),
    "welfare.claim_approve": roles(Role.welfare_officer),
    "welfare.claim_reject": roles(Role.welfare_officer),
    "welfare.claim_pay": roles(Role.welfare_officer, Role.office_bearer),
    "welfare.claim_appeal": roles(Role.member, Role.collector, Role.welfare_officer, Role.office_bearer),
    "welfare.claim_appeal_decide": roles(Role.office_bearer),
    "welfare.claim_withdraw": roles(Role.member, Role.collector, Role.welfare_officer, Role.office_bearer),
    "welfare.claim_document_upload": roles(Role.member, Role.collector, Role.welfare_officer, Role.office_bearer),
    "welfare.claim_document": roles(Role.welfare_officer, Role.office_bearer),
    "welfare.payout_reverse": roles(Role.office_bearer),
    "welfare.reports": roles(Role.welfare_officer, Role.office_bearer, Role.treasurer),
    "welfare.schemes": roles(Role.welfare_officer, Role.office_bearer),
    "welfare.fund": roles(Role.office_bearer, Role.treasurer),
    "api.members.entitlements": Rule(roles=MEMBER_STAFF | {Role.member}),
    "api.welfare.claims.create": roles(Role.member, Role.collector, Role.welfare_officer, Role.office_bearer),
    "api.welfare.claims.get": roles(Role.member, Role.welfare_officer, Role.office_bearer),
    "api.welfare.claims.approve": roles(Role.welfare_officer),
    "api.welfare.claims.reject": roles(Role.welfare_officer),
    "api.welfare.claims.pay": roles(Role.welfare_officer, Role.office_bearer),
    "api.welfare.fund": roles(Role.welfare_officer, Role.office_bearer, Role.treasurer),
    # Treasurer's books
    "treasury.index": Rule(roles=BOOKS),
    "treasury.report": Rule(roles=BOOKS),
    "treasury.export": Rule(roles=BOOKS),
    "treasury.statement_find": Rule(roles=BOOKS),
    "treasury.statement": Rule(roles=BOOKS),
    "treasury.statement_export": Rule(roles=BOOKS),
    "treasury.bank": Rule(roles=BOOKS),
    "treasury.bank_match": Rule(roles=BOOKS),
    "treasury.reconcile": Rule(roles=BOOKS),
    "treasury.periods": Rule(roles=BOOKS),
    "treasury.close": roles(Role.treasurer),
    "treasury.correct": roles(Role.treasurer),
    "treasury.checkpoint": Rule(roles=BOOKS),
    "treasury.verify": Rule(roles=BOOKS),
    "api.treasury.trial_balance": Rule(roles=BOOKS),
    # The members' monthly summary: totals only, for every member (and staff) to read.
    "treasury.summary": LOGGED_IN,
}


@dataclass
class Principal:
    """Who is asking: the user, the member they are (if any), and their role grants.

    grants maps a role to the branch ids it holds in, or to None for every branch.
    """

    user: object
    grants: dict[str, set[int] | None] = field(default_factory=dict)
    member_id: int | None = None
    via: str = "session"  # or "token"

    @property
    def role_names(self) -> frozenset[str]:
        return frozenset(self.grants)

    def has(self, role: str, branch_id: int | None = None) -> bool:
        if role not in self.grants:
            return False
        scope = self.grants[role]
        return scope is None or branch_id is None or branch_id in scope

    def branches_for(self, roles_: frozenset | set) -> set[int] | None:
        """Branch ids where the principal holds any of `roles_`; None means all branches."""
        found: set[int] = set()
        for role in roles_:
            if role in self.grants:
                scope = self.grants[role]
                if scope is None:
                    return None
                found |= scope
        return found


def visible_branches(principal: Principal) -> set[int] | None:
    """Branches whose members this principal may look up (None = all)."""
    return principal.branches_for(MEMBER_STAFF)


def can_see_member(principal: Principal | None, member) -> bool:
    if principal is None:
        return False
    if principal.member_id is not None and principal.member_id == member.id:
        return True
    return any(principal.has(role, member.branch_id) for role in MEMBER_STAFF)


def can_enrol_in(principal: Principal, branch_id: int) -> bool:
    return principal.has(Role.collector, branch_id) or principal.has(Role.office_bearer, branch_id)


def can_see_claim(principal: Principal | None, branch_id: int) -> bool:
    """Welfare claim details (diagnosis, cause of death, documents): welfare officers of the
    member's branch and office bearers only."""
    if principal is None:
        return False
    return principal.has(Role.welfare_officer, branch_id) or principal.has(Role.office_bearer, branch_id)


def can_decide_claim(principal: Principal | None, branch_id: int) -> bool:
    """Approve or reject a welfare claim: welfare officers of the member's branch."""
    return principal is not None and principal.has(Role.welfare_officer, branch_id)


def books_branches(principal: Principal) -> set[int] | None:
    """Branches whose books the principal may see (None = every branch, the union-wide view)."""
    return principal.branches_for(BOOKS)


HOME_ORDER = [Role.office_bearer, Role.dispatcher, Role.treasurer, Role.welfare_officer, Role.collector,
              Role.crisis_responder, Role.member]


def home_route(principal: Principal) -> str:
    """Each role lands on its own home page; someone with several roles lands on the most senior."""
    for role in HOME_ORDER:
        if role in principal.grants:
            return f"home.{role}"
    return "index"
