"""The app factory: mounts every domain's routes behind the policy guard, builds
the long-lived services in the lifespan, and adds the security middleware."""

from __future__ import annotations

import contextlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

import workers.registry  # noqa: F401 - registers every domain's due-work handlers
from union import routes as r
from crisis.api_docs import API_DOCS as CRISIS_API_DOCS
from dues.api_docs import API_DOCS as DUES_API_DOCS
from union.api_docs import API_DOCS
from union.errors import UnionError
from union.openapi import build as build_openapi
from union.policy import RULES
from union.services import build_services
from union.settings import Settings
from union.web import (BodyLimitMiddleware, SecurityHeadersMiddleware, guard, http_exception_handler,
                       union_error_handler)

STATIC = Path(__file__).resolve().parent / "static"
GET, POST, BOTH = ["GET"], ["POST"], ["GET", "POST"]


def route_table() -> list[tuple[str, object, list[str], str]]:
    """(path, endpoint, methods, name) of every route; names are the policy's keys."""
    table = [
        ("/", r.index, GET, "index"),
        ("/healthz", r.healthz, GET, "healthz"),
        ("/language", r.set_language, POST, "language.set"),
        ("/login", r.login, BOTH, "auth.login"),
        ("/login/member", r.member_login, BOTH, "auth.member_login"),
        ("/logout", r.logout, POST, "auth.logout"),
        ("/home", r.home, GET, "home"),
        ("/join", r.join, BOTH, "members.join"),
        ("/join/done", r.joined, GET, "members.joined"),
        ("/member/card", r.member_card, GET, "members.card"),
        ("/members", r.search_members, GET, "members.search"),
        ("/members/new", r.new_member, BOTH, "members.new"),
        ("/members/{member_no}", r.member_detail, GET, "members.detail"),
        ("/office/users", r.users_page, GET, "accounts.users"),
        ("/office/users/{username}/end-sessions", r.end_sessions, POST, "accounts.end_sessions"),
        ("/api/branches", r.api_branches, GET, "api.branches"),
        ("/api/me", r.api_me, GET, "api.me"),
        ("/api/members", r.api_create_member, POST, "api.members.create"),
        ("/api/members", r.api_search_members, GET, "api.members.search"),
        ("/api/members/{member_no}", r.api_get_member, GET, "api.members.get"),
    ]
    table += crisis_routes()
    table += dues_routes()
    table += card_routes()
    table += cash_ops_routes()
    table += welfare_routes()
    table += treasury_routes()
    for role in ("member", "collector", "welfare_officer", "dispatcher", "crisis_responder", "treasurer",
                 "office_bearer"):
        table.append((f"/home/{role}", r._role_home(role), GET, f"home.{role}"))
    return table


def crisis_routes() -> list[tuple[str, object, list[str], str]]:
    from crisis import routes as c

    return [
        ("/help", c.help_page, BOTH, "crisis.help"),
        ("/help/status/{reference}", c.help_status, BOTH, "crisis.help_status"),
        ("/help/status/{reference}/cancel", c.help_cancel, POST, "crisis.help_cancel"),
        ("/sw.js", c.service_worker, GET, "crisis.sw"),
        ("/manifest.webmanifest", c.manifest, GET, "crisis.manifest"),
        ("/crisis/twilio/sms", c.twilio_sms, POST, "crisis.twilio_sms"),
        ("/crisis/twilio/voice", c.twilio_voice, POST, "crisis.twilio_voice"),
        ("/crisis/hotline", c.hotline, BOTH, "crisis.hotline"),
        ("/crisis/board", c.board, GET, "crisis.board"),
        ("/crisis/team", c.team_app, GET, "crisis.team"),
        ("/crisis/teams/{team_id:int}/availability", c.team_availability_form, POST, "crisis.team_availability"),
        ("/crisis/offers/{offer_id:int}", c.offer_page, GET, "crisis.offer"),
        ("/crisis/offers/{offer_id:int}/accept", c.offer_accept, POST, "crisis.offer_accept"),
        ("/crisis/offers/{offer_id:int}/decline", c.offer_decline, POST, "crisis.offer_decline"),
        ("/crisis/incidents/{incident_id:int}", c.incident_page, GET, "crisis.incident"),
        ("/crisis/incidents/{incident_id:int}/status", c.incident_step, POST, "crisis.incident_step"),
        ("/crisis/incidents/{incident_id:int}/notes", c.incident_note, POST, "crisis.incident_note"),
        ("/api/crisis/incidents", c.api_create_incident, POST, "api.crisis.incidents.create"),
        ("/api/crisis/incidents/{reference}", c.api_incident_status, GET, "api.crisis.incidents.status"),
        ("/api/crisis/incidents/{incident_id:int}/status", c.api_incident_step, POST, "api.crisis.incidents.step"),
        ("/api/crisis/incidents/{incident_id:int}/notes", c.api_incident_note, POST, "api.crisis.incidents.note"),
        ("/api/crisis/places", c.api_places, GET, "api.crisis.places"),
        ("/api/crisis/board", c.api_board, GET, "api.crisis.board"),
        ("/api/crisis/offers", c.api_my_offers, GET, "api.crisis.my_offers"),
        ("/api/crisis/offers/{offer_id:int}", c.api_offer, GET, "api.crisis.offers.get"),
        ("/api/crisis/offers/{offer_id:int}/accept", c.api_accept, POST, "api.crisis.offers.accept"),
        ("/api/crisis/offers/{offer_id:int}/decline", c.api_decline, POST, "api.crisis.offers.decline"),
        ("/api/crisis/teams", c.api_create_team, POST, "api.crisis.teams.create"),
        ("/api/crisis/teams", c.api_teams, GET, "api.crisis.teams.list"),
        ("/api/crisis/teams/{team_id:int}/availability", c.api_availability, ["PUT"], "api.crisis.teams.availability"),
        ("/api/crisis/teams/{team_id:int}/location", c.api_location, POST, "api.crisis.teams.location"),
        ("/api/push/vapid-public-key", c.api_vapid_key, GET, "api.push.vapid_key"),
        ("/api/push/subscriptions", c.api_subscribe, POST, "api.push.subscribe"),
        ("/api/push/subscriptions", c.api_unsubscribe, ["DELETE"], "api.push.unsubscribe"),
    ]


def dues_routes() -> list[tuple[str, object, list[str], str]]:
    from dues import routes as d

    return [
        ("/dues/collect", d.collect, BOTH, "dues.collect"),
        ("/dues/receipts/{receipt_id:int}", d.receipt, GET, "dues.receipt"),
        ("/dues/me", d.my_dues, GET, "dues.me"),
        ("/api/dues/payments", d.api_record_payment, POST, "api.dues.payments.create"),
        ("/api/members/{member_no}/standing", d.api_standing, GET, "api.members.standing"),
    ]


def card_routes() -> list[tuple[str, object, list[str], str]]:
    """Card payments through Stripe: checkout, subscriptions, the webhook (dues/card*.py)."""
    from dues import card_routes as k

    return [
        ("/dues/card", k.card_page, GET, "dues.card"),
        ("/dues/card/checkout", k.start_checkout, POST, "dues.card_checkout"),
        ("/dues/card/autopay", k.start_autopay, POST, "dues.card_autopay"),
        ("/dues/card/autopay/cancel", k.cancel_autopay, POST, "dues.card_autopay_cancel"),
        ("/dues/card/done", k.card_done, GET, "dues.card_done"),
        ("/dues/stripe/webhook", k.stripe_webhook, POST, "dues.stripe_webhook"),
    ]


def card_mounts(app: Starlette, settings: Settings) -> None:
    """Test mode without a Stripe key: the local Stripe stand-in's pages (marked TEST MODE) at /stripe-test/,
    delivering its webhooks to this app in-process. Built per app, so it exists only when enabled."""
    if settings.stripe_api_key or not settings.stripe_test_mode:
        return
    from dues.stripe_billing import STANDIN_MOUNT

    async def standin(scope, receive, send):
        billing = scope["app"].state.services.extras.get("billing")
        path = scope.get("path", "")
        # Only the payment pages: the app reaches the stand-in's API in-process, nobody else needs it.
        pages = path.startswith(f"{STANDIN_MOUNT}/pay/") or path.startswith("/pay/")
        if billing is None or not billing.test_mode or not pages:
            response = JSONResponse({"error": "not_found"}, status_code=404)
            return await response(scope, receive, send)
        billing.standin.webhook_app = scope["app"]
        await billing.standin.app(scope, receive, send)

    app.router.routes.append(Mount(STANDIN_MOUNT, app=standin, name="stripe_test"))


def cash_ops_routes() -> list[tuple[str, object, list[str], str]]:
    """Collection sheets, cash hand-overs, waivers and holidays (dues/)."""
    from dues import cash_ops_routes as o

    return [
        ("/dues/sheets", o.sheets_page, BOTH, "dues.sheets"),
        ("/dues/sheets/{sheet_id:int}", o.sheet_preview, GET, "dues.sheet"),
        ("/dues/sheets/{sheet_id:int}/apply", o.sheet_apply, POST, "dues.sheet_apply"),
        ("/dues/handover", o.handover_page, BOTH, "dues.handover"),
        ("/dues/handover/{handover_id:int}/cancel", o.handover_cancel, POST, "dues.handover_cancel"),
        ("/dues/handovers", o.handovers_page, GET, "dues.handovers"),
        ("/dues/handovers/{handover_id:int}/confirm", o.handover_confirm, POST, "dues.handover_confirm"),
        ("/dues/me/messages", o.my_messages, POST, "dues.messages"),
        ("/members/{member_no}/waivers", o.waivers_page, BOTH, "dues.waivers"),
        ("/members/{member_no}/waivers/{waiver_id:int}/revoke", o.waiver_revoke, POST, "dues.waiver_revoke"),
        ("/api/members/{member_no}/waivers", o.api_grant_waiver, POST, "api.dues.waivers.create"),
    ]


def welfare_routes() -> list[tuple[str, object, list[str], str]]:
    """Welfare schemes, entitlements, claims and payouts (welfare/)."""
    from welfare import routes as w

    claim = "/welfare/claims/{claim_id:int}"
    api_claim = "/api/welfare/claims/{claim_id:int}"
    return [
        ("/welfare/me", w.my_welfare, GET, "welfare.me"),
        ("/welfare/me/claim", w.my_claim_new, BOTH, "welfare.me_claim"),
        ("/welfare/claims", w.claim_list, GET, "welfare.claims"),
        ("/welfare/claims/new", w.claim_new, BOTH, "welfare.claim_new"),
        (claim, w.claim_page, GET, "welfare.claim"),
        (claim + "/approve", w.claim_approve, POST, "welfare.claim_approve"),
        (claim + "/reject", w.claim_reject, POST, "welfare.claim_reject"),
        (claim + "/pay", w.claim_pay, POST, "welfare.claim_pay"),
        (claim + "/appeal", w.claim_appeal, POST, "welfare.claim_appeal"),
        (claim + "/appeal-decision", w.claim_appeal_decide, POST, "welfare.claim_appeal_decide"),
        (claim + "/withdraw", w.claim_withdraw, POST, "welfare.claim_withdraw"),
        (claim + "/documents", w.claim_document_upload, POST, "welfare.claim_document_upload"),
        (claim + "/documents/{document_id:int}", w.claim_document, GET, "welfare.claim_document"),
        ("/welfare/payouts/{payout_id:int}/reverse", w.payout_reverse, POST, "welfare.payout_reverse"),
        ("/welfare/reports", w.reports, GET, "welfare.reports"),
        ("/welfare/schemes", w.schemes_page, BOTH, "welfare.schemes"),
        ("/welfare/fund", w.fund_page, BOTH, "welfare.fund"),
        ("/api/members/{member_no}/entitlements", w.api_entitlements, GET, "api.members.entitlements"),
        ("/api/welfare/claims", w.api_file_claim, POST, "api.welfare.claims.create"),
        (api_claim, w.api_claim, GET, "api.welfare.claims.get"),
        (api_claim + "/approve", w.api_approve, POST, "api.welfare.claims.approve"),
        (api_claim + "/reject", w.api_reject, POST, "api.welfare.claims.reject"),
        (api_claim + "/pay", w.api_pay, POST, "api.welfare.claims.pay"),
        ("/api/welfare/fund", w.api_fund, GET, "api.welfare.fund"),
    ]


def treasury_routes() -> list[tuple[str, object, list[str], str]]:
    """The treasurer's books: reports, reconciliation, checkpoints, period close (treasury in dues/ or treasury/)."""
    from treasury import routes as t

    return [
        ("/treasury", t.index, GET, "treasury.index"),
        ("/treasury/reports/{report}", t.report, GET, "treasury.report"),
        ("/treasury/exports/{report}", t.export, GET, "treasury.export"),
        ("/treasury/statements", t.statement, GET, "treasury.statement_find"),
        ("/treasury/statements/{member_no}", t.statement, GET, "treasury.statement"),
        ("/treasury/statements/{member_no}/export", t.statement_export, GET, "treasury.statement_export"),
        ("/treasury/bank", t.bank, BOTH, "treasury.bank"),
        ("/treasury/bank/lines/{line_id:int}/match", t.bank_match, POST, "treasury.bank_match"),
        ("/treasury/reconcile", t.reconcile_page, GET, "treasury.reconcile"),
        ("/treasury/periods", t.periods_page, GET, "treasury.periods"),
        ("/treasury/periods/close", t.close_period, POST, "treasury.close"),
        ("/treasury/periods/{month}/checkpoint", t.checkpoint_download, GET, "treasury.checkpoint"),
        ("/treasury/corrections", t.correct, POST, "treasury.correct"),
        ("/treasury/verify", t.verify, BOTH, "treasury.verify"),
        ("/summary", t.member_summary, GET, "treasury.summary"),
        ("/api/treasury/trial-balance", t.api_trial_balance, GET, "api.treasury.trial_balance"),
    ]


def api_docs() -> dict:
    """Every domain's OpenAPI fragments, by route name."""
    docs = {**API_DOCS, **CRISIS_API_DOCS, **DUES_API_DOCS}
    from welfare.api_docs import API_DOCS as WELFARE_API_DOCS

    docs.update(WELFARE_API_DOCS)
    from dues.cash_ops_api_docs import API_DOCS as CASH_OPS_API_DOCS

    docs.update(CASH_OPS_API_DOCS)
    from treasury.api_docs import API_DOCS as TREASURY_API_DOCS

    docs.update(TREASURY_API_DOCS)
    return docs


def build_routes() -> list:
    routes = []
    for path, endpoint, methods, name in route_table():
        rule = RULES.get(name)
        if rule is None:
            raise RuntimeError(f"route {name} ({path}) has no rule in union.policy.RULES")
        routes.append(Route(path, guard(name, rule, endpoint), methods=methods, name=name))

    async def openapi(request: Request):
        return JSONResponse(request.app.state.openapi)

    routes.append(Route("/api/openapi.json", guard("openapi", RULES["openapi"], openapi), methods=GET, name="openapi"))
    routes.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
    return routes


def create_app(settings: Settings | None = None, *, services=None) -> Starlette:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        own = services is None
        app.state.services = services or await build_services(settings)
        try:
            yield
        finally:
            if own:
                await app.state.services.close()

    routes = build_routes()
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeadersMiddleware),
                    Middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)],
        exception_handlers={HTTPException: http_exception_handler, UnionError: union_error_handler},
        lifespan=lifespan,
    )
    app.state.openapi = build_openapi(routes, api_docs(), title="Union platform API", version="1")
    card_mounts(app, settings)
    return app
