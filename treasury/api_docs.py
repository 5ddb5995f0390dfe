"""OpenAPI operations of the treasury /api/ routes (DESIGN §5)."""

STR = {"type": "string"}
AUTH = [{"bearer": []}]
ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": STR, "message": STR, "field": STR}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


API_DOCS = {
    "api.treasury.trial_balance": {
        "summary": "Trial balance: every ledger account's signed balance (debit positive, credit negative) "
                   "from the entries dated on or before as_of (treasurer, office bearer)",
        "security": AUTH,
        "parameters": [
            {"name": "as_of", "in": "query", "required": False, "description": "YYYY-MM-DD; default today",
             "schema": {"type": "string", "format": "date"}},
            {"name": "branch", "in": "query", "required": False,
             "description": "branch code: only entries of that branch's members and collectors",
             "schema": {"type": "string", "maxLength": 16}},
        ],
        "responses": {
            "200": _json({"type": "object", "required": ["accounts", "total_minor"], "properties": {
                "accounts": {"type": "array", "items": {
                    "type": "object", "required": ["code", "name", "balance_minor", "currency"], "properties": {
                        "code": STR, "name": STR, "balance_minor": {"type": "integer"}, "currency": STR}}},
                "total_minor": {"type": "integer"}}}),
            "404": _json(ERROR, "No such branch (or not one of the caller's)"),
            "422": _json(ERROR, "as_of is not a date"),
        },
    },
}
