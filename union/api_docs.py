"""OpenAPI operations of the union core's /api/ routes."""

def _obj(props: dict, required: list[str] = ()) -> dict:
    return {"type": "object", "properties": props, "required": list(required)}


STR = {"type": "string"}
MEMBER = _obj({"member_no": STR, "name": STR, "branch": STR, "language": STR, "joined_on": STR},
              ["member_no", "name", "branch"])
MEMBER_NO = {"name": "member_no", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 24}}
AUTH = [{"bearer": []}]


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


API_DOCS = {
    "api.branches": {
        "summary": "Branches (districts) with their coordinates",
        "responses": {"200": _json(_obj({"branches": {"type": "array", "items": _obj(
            {"code": STR, "name": STR, "lat": {"type": "number"}, "lon": {"type": "number"}},
            ["code", "name", "lat", "lon"])}}, ["branches"]))},
    },
    "api.me": {"summary": "The logged-in user", "security": AUTH,
               "responses": {"200": _json(_obj({"username": STR, "roles": {"type": "array", "items": STR}}))}},
    "api.members.create": {
        "summary": "Enrol a member (collector or office bearer)", "security": AUTH,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _obj({
            "name": {"type": "string", "minLength": 1, "maxLength": 80},
            "branch": STR, "language": {"type": "string", "enum": ["kn", "te", "ta", "hi", "ur", "mr", "en"]},
            "phone": STR, "legal_name": STR, "date_of_birth": {"type": "string", "format": "date"},
            "nominee": STR, "pin": {"type": "string", "pattern": "^[0-9]{4,8}$"}},
            ["name", "branch", "language"])}}},
        "responses": {"201": _json(MEMBER, "Created")},
    },
    "api.members.search": {
        "summary": "Search members by number, phone or name, within the caller's branches", "security": AUTH,
        "parameters": [{"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 80}}],
        "responses": {"200": _json(_obj({"members": {"type": "array", "items": MEMBER}}, ["members"]))},
    },
    "api.members.get": {"summary": "One member", "security": AUTH, "parameters": [MEMBER_NO],
                        "responses": {"200": _json(MEMBER)}},
}
