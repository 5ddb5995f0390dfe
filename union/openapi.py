"""The OpenAPI document of every /api/ route, built from the `API_DOCS` each
domain declares beside its routes (route name -> operation)."""

from __future__ import annotations

import re

from starlette.routing import Route

ERROR = {"type": "object", "required": ["error", "message"],
         "properties": {"error": {"type": "string"}, "message": {"type": "string"}, "field": {"type": "string"}}}


def build(routes: list[Route], docs: dict[str, dict], *, title: str, version: str) -> dict:
    paths: dict[str, dict] = {}
    for route in routes:
        if not isinstance(route, Route) or not route.path.startswith("/api/") or route.name == "openapi":
            continue
        op = docs.get(route.name)
        if op is None:
            raise RuntimeError(f"API route {route.name} has no OpenAPI description")
        for method in sorted((route.methods or set()) - {"HEAD"}):
            operation = {"operationId": route.name, **op}
            operation.setdefault("responses", {"200": {"description": "OK"}})
            operation["responses"].setdefault("default", {"description": "Error",
                                                          "content": {"application/json": {"schema": ERROR}}})
            # OpenAPI path templates have no Starlette convertors: {team_id:int} -> {team_id}.
            paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", route.path), {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": paths,
    }
