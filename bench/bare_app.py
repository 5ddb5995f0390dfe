"""The floor the union app is measured against: a bare Starlette app with one
trivial JSON route and one trivial HTML route, served by uvicorn with the same
options `union serve` uses. Run by bench/http_floor.py:

    python bench/bare_app.py --port 8100
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bare</title></head>
<body><h1>Hello</h1><p>A trivial page.</p></body></html>"""


async def json_route(request):
    return JSONResponse({"status": "ok"})


async def html_route(request):
    return HTMLResponse(PAGE)


app = Starlette(routes=[Route("/json", json_route), Route("/html", html_route)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    # The same uvicorn options as union.cli.cmd_serve, so only the app differs.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=True, server_header=False)


if __name__ == "__main__":
    main()
