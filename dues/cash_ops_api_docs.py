"""OpenAPI operations of the cash-operations /api/ routes (dues/cash_ops_routes.py)."""

from dues.api_docs import AUTH, ERROR, STR, _json

WAIVER = {"type": "object", "required": ["id", "member_no", "kind", "from_month", "months", "amount_minor",
                                         "currency", "entry_id", "revoked"], "properties": {
    "id": {"type": "integer"}, "member_no": STR, "kind": {"type": "string", "enum": ["holiday", "hardship"]},
    "from_month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}, "months": {"type": "integer"},
    "amount_minor": {"type": "integer"}, "currency": STR, "entry_id": {"type": ["string", "null"]},
    "revoked": {"type": "boolean"}}}

API_DOCS = {
    "api.dues.waivers.create": {
        "summary": "Grant a member a dues holiday or hardship waiver (office bearer of the member's branch); "
                   "the months' dues are booked Dr dues_waived / Cr dues_income",
        "security": AUTH,
        "parameters": [{"name": "member_no", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["kind", "from_month", "months", "reason"], "properties": {
                "kind": {"type": "string", "enum": ["holiday", "hardship"]},
                "from_month": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                "months": {"type": "integer", "minimum": 1, "maximum": 24},
                "reason": {"type": "string", "minLength": 1, "maxLength": 500}}}}}},
        "responses": {
            "201": _json(WAIVER, "Created"),
            "403": _json(ERROR, "Not an office bearer of the member's branch"),
            "404": _json(ERROR, "No such member"),
            "422": _json(ERROR, "Invalid kind, month, months or missing reason"),
        },
    },
}
