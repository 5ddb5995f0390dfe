"""OpenAPI operations of the dues /api/ routes (DESIGN §5)."""

STR = {"type": "string"}
AUTH = [{"bearer": []}]
STANDING = {"type": "object", "required": ["status", "paid_through", "arrears_minor", "currency"], "properties": {
    "status": {"type": "string", "enum": ["new", "current", "grace", "lapsed", "exempt"]},
    "paid_through": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}$"},
    "arrears_minor": {"type": "integer", "minimum": 0}, "currency": STR}}
ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": STR, "message": STR, "field": STR}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


API_DOCS = {
    "api.dues.payments.create": {
        "summary": "Record a cash payment a collector took (amount in paise)", "security": AUTH,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["member_no", "amount_minor", "currency", "receipt_no"], "properties": {
                "member_no": {"type": "string", "minLength": 1, "maxLength": 24},
                "amount_minor": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                "currency": {"type": "string", "enum": ["INR"]},
                "receipt_no": {"type": "string", "minLength": 1, "maxLength": 40},
                "months": {"type": "integer", "minimum": 1, "maximum": 120}}}}}},
        "responses": {
            "201": _json({"type": "object", "required": ["id", "member_no", "amount_minor", "currency", "receipt_no",
                                                         "standing"], "properties": {
                "id": {"type": "integer"}, "member_no": STR, "amount_minor": {"type": "integer"}, "currency": STR,
                "receipt_no": STR, "months": {"type": ["integer", "null"]}, "standing": STANDING}}, "Created"),
            "404": _json(ERROR, "No such member (or not in the collector's branches)"),
            "409": _json(ERROR, "The receipt number was already used by this collector"),
            "422": _json(ERROR, "Invalid amount, currency, receipt number or months"),
        },
    },
    "api.members.standing": {
        "summary": "A member's dues standing (staff who may see the member, or the member themself)",
        "security": AUTH,
        "parameters": [{"name": "member_no", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json(STANDING), "404": _json(ERROR, "No such member")},
    },
}
