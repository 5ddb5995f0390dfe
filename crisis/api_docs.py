"""OpenAPI operations of the crisis /api/ routes (DESIGN §5)."""

KINDS = ["police", "client_violence", "hired_criminals", "gatekeeper", "eviction", "medical", "other"]
STATUSES = ["new", "offered", "accepted", "en_route", "on_scene", "resolved", "cancelled", "escalated"]
LANGS = ["kn", "te", "ta", "hi", "ur", "mr", "en"]
SKILLS = ["police_station", "legal", "medical", "counselling", "gatekeeper", "trans_led"]
STR = {"type": "string"}
AUTH = [{"bearer": []}]
POINT = {"type": "object", "required": ["lat", "lon"], "properties": {
    "lat": {"type": "number", "minimum": -90, "maximum": 90}, "lon": {"type": "number", "minimum": -180, "maximum": 180}}}
AREA = {"type": "object", "required": ["area"], "properties": {"area": {"type": "string", "minLength": 1, "maxLength": 120}}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _id(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


OFFER = {"type": "object", "required": ["id", "status"], "properties": {
    "id": {"type": "integer"}, "status": STR, "incident": {"type": "integer"}, "reference": STR,
    "incident_status": STR, "deadline_at": STR, "broadcast": {"type": "boolean"}}}
TEAM = {"type": "object", "required": ["id", "name", "status"], "properties": {
    "id": {"type": "integer"}, "name": STR, "branch": {"type": ["string", "null"]}, "status": STR,
    "skills": {"type": "array", "items": STR}, "languages": {"type": "array", "items": STR}}}
PUBLIC_INCIDENT = {"type": "object", "required": ["reference", "status"], "properties": {
    "reference": STR, "status": {"type": "string", "enum": STATUSES}, "kind": STR, "created_at": STR,
    "steps": {"type": "object"}}}

API_DOCS = {
    "api.crisis.incidents.create": {
        "summary": "Ask for help (no login needed)",
        "requestBody": _body({"type": "object", "required": ["kind", "language", "location"], "properties": {
            "kind": {"type": "string", "enum": KINDS}, "language": {"type": "string", "enum": LANGS},
            "location": {"oneOf": [POINT, AREA]},
            "callback_phone": {"type": "string", "maxLength": 20}, "note": {"type": "string", "maxLength": 1000}}}),
        "responses": {"201": _json({"type": "object", "required": ["reference", "status", "status_token"], "properties": {
            "reference": STR, "status": STR, "status_token": STR}}, "Created")},
    },
    "api.crisis.incidents.status": {
        "summary": "The status of a help request, for the caller",
        "parameters": [{"name": "reference", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 16}},
                       {"name": "token", "in": "query", "required": True, "schema": STR}],
        "responses": {"200": _json(PUBLIC_INCIDENT)},
    },
    "api.crisis.incidents.step": {
        "summary": "Move an incident on (en_route, on_scene, resolved, cancelled)", "security": AUTH,
        "parameters": [_id("incident_id")],
        "requestBody": _body({"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["en_route", "on_scene", "resolved", "cancelled"]}}}),
        "responses": {"200": _json(PUBLIC_INCIDENT)},
    },
    "api.crisis.incidents.note": {
        "summary": "Add a case note (kept encrypted)", "security": AUTH, "parameters": [_id("incident_id")],
        "requestBody": _body({"type": "object", "required": ["body"], "properties": {
            "body": {"type": "string", "minLength": 1, "maxLength": 5000}}}),
        "responses": {"201": _json({"type": "object"}, "Created")},
    },
    "api.crisis.places": {
        "summary": "Search the gazetteer of Karnataka localities",
        "parameters": [{"name": "q", "in": "query", "required": False, "schema": {"type": "string", "maxLength": 60}}],
        "responses": {"200": _json({"type": "object", "required": ["places"], "properties": {
            "places": {"type": "array", "items": {"type": "object"}}}})},
    },
    "api.crisis.board": {"summary": "Open incidents, offers and teams for the dispatcher board", "security": AUTH,
                         "responses": {"200": _json({"type": "object"})}},
    "api.crisis.my_offers": {"summary": "Pending offers to my teams", "security": AUTH,
                             "responses": {"200": _json({"type": "object", "properties": {
                                 "offers": {"type": "array", "items": OFFER}}})}},
    "api.crisis.offers.get": {"summary": "One offer with the incident's location (team members)", "security": AUTH,
                              "parameters": [_id("offer_id")], "responses": {"200": _json(OFFER)}},
    "api.crisis.offers.accept": {"summary": "Accept an offer", "security": AUTH, "parameters": [_id("offer_id")],
                                 "responses": {"200": _json(OFFER)}},
    "api.crisis.offers.decline": {"summary": "Decline an offer", "security": AUTH, "parameters": [_id("offer_id")],
                                  "responses": {"200": _json(OFFER)}},
    "api.crisis.teams.create": {
        "summary": "Create a crisis team (office bearer or dispatcher)", "security": AUTH,
        "requestBody": _body({"type": "object", "required": ["name", "branch", "base", "skills", "languages", "members"],
                              "properties": {
                                  "name": {"type": "string", "minLength": 1, "maxLength": 80}, "branch": STR, "base": POINT,
                                  "skills": {"type": "array", "items": {"type": "string", "enum": SKILLS}},
                                  "languages": {"type": "array", "items": {"type": "string", "enum": LANGS}, "minItems": 1},
                                  "members": {"type": "array", "items": {"oneOf": [STR, {"type": "object", "properties": {
                                      "username": STR, "phone": STR}}]}}}}),
        "responses": {"201": _json(TEAM, "Created")},
    },
    "api.crisis.teams.list": {"summary": "Every team", "security": AUTH,
                              "responses": {"200": _json({"type": "object", "properties": {
                                  "teams": {"type": "array", "items": TEAM}}})}},
    "api.crisis.teams.availability": {
        "summary": "Switch a team available or off duty", "security": AUTH, "parameters": [_id("team_id")],
        "requestBody": _body({"type": "object", "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["available", "off_duty"]}}}),
        "responses": {"200": _json(TEAM)},
    },
    "api.crisis.teams.location": {
        "summary": "Report a team's live location", "security": AUTH, "parameters": [_id("team_id")],
        "requestBody": _body(POINT), "responses": {"200": _json({"type": "object"})},
    },
    "api.push.vapid_key": {"summary": "The VAPID public key (applicationServerKey)",
                           "responses": {"200": _json({"type": "object", "required": ["key"], "properties": {"key": STR}})}},
    "api.push.subscribe": {
        "summary": "Register this device's push subscription (PushSubscription.toJSON())", "security": AUTH,
        "requestBody": _body({"type": "object", "required": ["endpoint", "keys"], "properties": {
            "endpoint": {"type": "string", "maxLength": 2000}, "keys": {"type": "object", "required": ["p256dh", "auth"],
                                                                        "properties": {"p256dh": STR, "auth": STR}}}}),
        "responses": {"201": _json({"type": "object", "properties": {"id": {"type": "integer"}}}, "Created")},
    },
    "api.push.unsubscribe": {
        "summary": "Remove this device's push subscription", "security": AUTH,
        "requestBody": _body({"type": "object", "required": ["endpoint"], "properties": {"endpoint": STR}}),
        "responses": {"204": {"description": "Removed"}},
    },
}
