"""OpenAPI operations of the welfare /api/ routes (entitlements is DESIGN §5)."""

STR = {"type": "string"}
INT = {"type": "integer"}
AUTH = [{"bearer": []}]
ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": STR, "message": STR, "field": STR}}
NOT_ELIGIBLE = {"type": "object", "required": ["error", "message", "reasons"], "properties": {
    "error": {"type": "string", "enum": ["not_eligible"]}, "message": STR, "field": STR,
    "reasons": {"type": "array", "items": STR}}}
STATUS = {"type": "string", "enum": ["submitted", "under_review", "approved", "rejected", "paid", "withdrawn"]}
CLAIM = {"type": "object", "required": ["id", "reference", "member_no", "scheme", "status", "event_date",
                                        "amount_minor", "currency", "approvals_needed"], "properties": {
    "id": INT, "reference": STR, "member_no": STR, "scheme": STR, "status": STATUS,
    "event_date": {"type": "string", "format": "date"}, "amount_minor": INT, "currency": STR,
    "approvals_needed": INT, "appeal_status": {"type": ["string", "null"]}}}
PAYOUT = {"type": "object", "required": ["id", "amount_minor", "currency", "method", "entry_id"], "properties": {
    "id": INT, "amount_minor": INT, "currency": STR, "method": {"type": "string", "enum": ["cash", "bank"]},
    "reference": STR, "entry_id": STR, "reversed": {"type": "boolean"}}}
CLAIM_ID = [{"name": "claim_id", "in": "path", "required": True, "schema": INT}]


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


API_DOCS = {
    "api.members.entitlements": {
        "summary": "What a member can claim now from each welfare scheme, and why not (reasons in the caller's "
                   "language; empty when eligible)", "security": AUTH,
        "parameters": [{"name": "member_no", "in": "path", "required": True, "schema": STR}],
        "responses": {
            "200": _json({"type": "object", "required": ["entitlements"], "properties": {"entitlements": {
                "type": "array", "items": {"type": "object",
                                           "required": ["scheme", "name", "eligible", "amount_minor", "reasons"],
                                           "properties": {
                                               "scheme": STR, "name": STR, "eligible": {"type": "boolean"},
                                               "amount_minor": {"type": ["integer", "null"]},
                                               "reasons": {"type": "array", "items": STR}}}}}}),
            "404": _json(ERROR, "No such member (or not visible to the caller)")},
    },
    "api.welfare.claims.create": {
        "summary": "File a welfare claim (the member, or staff on the member's behalf)", "security": AUTH,
        "requestBody": _body({"type": "object", "required": ["member_no", "scheme", "event_date", "evidence"],
                              "properties": {
                                  "member_no": {"type": "string", "minLength": 1, "maxLength": 24},
                                  "scheme": STR, "event_date": {"type": "string", "format": "date"},
                                  "evidence": {"type": "string", "enum": ["document", "peer_attestation",
                                                                          "collector_attestation"]},
                                  "claimed_minor": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                                  "attester_member_no": STR,
                                  "details": {"type": "string", "maxLength": 2000}}}),
        "responses": {"201": _json(CLAIM, "Created"), "404": _json(ERROR, "Unknown member or scheme"),
                      "409": _json(ERROR, "A claim for the same event exists"),
                      "422": _json(NOT_ELIGIBLE, "Not eligible (with the reasons) or invalid input")},
    },
    "api.welfare.claims.get": {
        "summary": "A claim: the member's own, or (with its details, audited) for welfare officers of the branch "
                   "and office bearers", "security": AUTH, "parameters": CLAIM_ID,
        "responses": {"200": _json({**CLAIM, "properties": {**CLAIM["properties"], "approvals": INT,
                                                            "payouts": {"type": "array", "items": PAYOUT},
                                                            "details": {"type": ["string", "null"]}}}),
                      "404": _json(ERROR, "No such claim")},
    },
    "api.welfare.claims.approve": {
        "summary": "Approve a claim (a welfare officer of the branch; not the claimant or the filer)",
        "security": AUTH, "parameters": CLAIM_ID, "requestBody": _body({"type": "object"}),
        "responses": {"200": _json(CLAIM), "403": _json(ERROR, "Claimant, filer, or already approved by you"),
                      "404": _json(ERROR, "No such claim"), "409": _json(ERROR, "Not waiting for a decision")},
    },
    "api.welfare.claims.reject": {
        "summary": "Reject a claim with a reason (a welfare officer of the branch)", "security": AUTH,
        "parameters": CLAIM_ID,
        "requestBody": _body({"type": "object", "required": ["reason"], "properties": {
            "reason": {"type": "string", "minLength": 1, "maxLength": 500}}}),
        "responses": {"200": _json(CLAIM), "403": _json(ERROR, "Claimant or filer"),
                      "404": _json(ERROR, "No such claim"), "409": _json(ERROR, "Not waiting for a decision"),
                      "422": _json(ERROR, "No reason given")},
    },
    "api.welfare.claims.pay": {
        "summary": "Pay an approved claim from the welfare fund (cash, or bank transfer with its reference)",
        "security": AUTH, "parameters": CLAIM_ID,
        "requestBody": _body({"type": "object", "required": ["method"], "properties": {
            "method": {"type": "string", "enum": ["cash", "bank"]}, "reference": {"type": "string", "maxLength": 80}}}),
        "responses": {"201": _json({**CLAIM, "properties": {**CLAIM["properties"], "payout": PAYOUT,
                                                            "fund_balance_minor": INT}}, "Paid"),
                      "404": _json(ERROR, "No such claim"),
                      "409": _json(ERROR, "Not approved, or the fund or the scheme's budget is short"),
                      "422": _json(ERROR, "Invalid method or missing bank reference")},
    },
    "api.welfare.fund": {
        "summary": "The welfare fund's balance", "security": AUTH,
        "responses": {"200": _json({"type": "object", "required": ["balance_minor", "currency"], "properties": {
            "balance_minor": INT, "currency": STR}})},
    },
}
