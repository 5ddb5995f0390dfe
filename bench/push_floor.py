"""The floor under the crisis issue's request-to-push target: how fast can *any* app
on this stack and this machine take a help request and hand a push to a local push
service, when C callers ask at the same moment?

    .venv/bin/python bench/push_floor.py                       # 20 and 100 callers, 10 bursts each
    .venv/bin/python bench/push_floor.py --callers 20 --bursts 20 --loop uvloop --http httptools

The crisis issue asks for request-to-push p99 < 50 ms at 20 concurrent callers and
< 150 ms at 100 (bench/dispatch.py (b) measures the union app). This benchmark
measures three stripped-down apps served by uvicorn with the same options as `union
serve`, each doing strictly less than the union app, in the same run:

  bare   POST -> 201: the HTTP stack alone (Starlette on uvicorn), no database, no push;
  db     one INSERT and COMMIT through SQLAlchemy's async engine on SQLite (WAL,
         synchronous=NORMAL: the app's settings), then 201;
  push   the same INSERT and COMMIT, then the push encrypted and posted *inside the
         request* by the union app's own sender (crisis.push.WebPushSender: pywebpush
         aes128gcm, VAPID signature reused, the shared httpx client), then 201.

No login, no rate limit, no validation, no audit record, no dispatch decision, no
offer or due-work rows, no job queue: everything the union app does on top of this
is extra. Callers are C asyncio tasks speaking raw HTTP/1.1 over connections opened
beforehand (so the load generator costs little), released together for each burst; the push service is bench/dispatch.py's (a separate
process that stamps each push's arrival with the system-wide monotonic clock). The
load generator shares the machine's cores with the app and the push service, as it
does in bench/dispatch.py. If the `push` row's p99 is above the target, the target
cannot be met by any app on this stack on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.http_floor import free_port, machine, start  # noqa: E402

VARIANTS = ("bare", "db", "push")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


# --- The floor app (a subprocess: `push_floor.py --serve`) -------------------------------------

def serve(args) -> None:
    import uvicorn
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from py_vapid import Vapid02
    from sqlalchemy import event, text
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    from crisis.push import WebPushSender

    engine = create_async_engine(f"sqlite+aiosqlite:///{args.db}", pool_size=1, max_overflow=0)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    insert = text("INSERT INTO incident (ref, lat, lon, kind, created_at) VALUES (:ref, :lat, :lon, :kind, :at)")
    # The subscription a team's phone would hold (only its public half matters to the sender).
    p256dh = base64.urlsafe_b64encode(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)).rstrip(b"=").decode()
    auth = base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()
    state: dict = {}

    async def startup() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE IF NOT EXISTS incident (id INTEGER PRIMARY KEY, ref TEXT,"
                                    " lat REAL, lon REAL, kind TEXT, created_at REAL)"))
        vapid = Vapid02()
        vapid.generate_keys()
        state["client"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
        state["sender"] = WebPushSender(state["client"], vapid, "mailto:bench@example.org")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await startup()
        yield
        await state["client"].aclose()
        await engine.dispose()

    async def store(body: dict) -> None:
        async with engine.begin() as conn:
            await conn.execute(insert, {"ref": body["ref"], "lat": body["lat"], "lon": body["lon"],
                                        "kind": body["kind"], "at": time.time()})

    async def bare(request):
        body = await request.json()
        return JSONResponse({"ref": body["ref"]}, status_code=201)

    async def db(request):
        body = await request.json()
        await store(body)
        return JSONResponse({"ref": body["ref"]}, status_code=201)

    async def push(request):
        body = await request.json()
        await store(body)
        result = await state["sender"].send(endpoint=f"{args.push_base}/push/{body['ref']}", p256dh=p256dh,
                                            auth=auth, payload={"type": "offer", "offer": 1}, ttl=120)
        return JSONResponse({"ref": body["ref"], "push": result.status}, status_code=201)

    async def ready(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/bare", bare, methods=["POST"]), Route("/db", db, methods=["POST"]),
                            Route("/push", push, methods=["POST"]), Route("/ready", ready)],
                    lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", proxy_headers=True,
                server_header=False, loop=args.loop, http=args.http)


# --- The callers ---------------------------------------------------------------------------------

class Connection:
    """One caller's keep-alive connection, spoken in raw HTTP/1.1 so that the load generator costs
    little CPU beside the app (an httpx request costs about as much as the bare app's answer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, base: str) -> Connection:
        host, port = base.removeprefix("http://").split(":")
        return cls(*await asyncio.open_connection(host, int(port)), f"{host}:{port}")

    async def post(self, path: str, body: bytes) -> int:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        await self.reader.readexactly(length)
        return int(head.split(b" ", 2)[1])

    def close(self) -> None:
        self.writer.close()


def request(ref: str) -> bytes:
    return b'{"ref":"%s","lat":12.97,"lon":77.59,"kind":"police"}' % ref.encode()


async def measure(app_base: str, push_base: str, variant: str, callers: int, bursts: int) -> dict:
    http_ms: list[float] = []
    push_ms: list[float] = []
    path = f"/{variant}"
    conns = [await Connection.open(app_base) for _ in range(callers)]
    async with httpx.AsyncClient(timeout=60) as records_client:
        try:
            await asyncio.gather(*(c.post(path, request(f"warm{i}")) for i, c in enumerate(conns)))
            seen = len((await records_client.get(f"{push_base}/_records")).json())
            for burst in range(bursts):
                go = asyncio.Event()
                sent: dict[str, float] = {}

                async def caller(i: int) -> None:
                    ref = f"b{burst}c{i}{secrets.token_hex(3)}"
                    body = request(ref)
                    await go.wait()
                    sent[ref] = t0 = time.monotonic()
                    status = await conns[i].post(path, body)
                    http_ms.append((time.monotonic() - t0) * 1000)
                    assert status == 201, status

                tasks = [asyncio.create_task(caller(i)) for i in range(callers)]
                await asyncio.sleep(0.05)  # every caller waiting on the event
                go.set()
                await asyncio.gather(*tasks)
                if variant == "push":
                    records = (await records_client.get(f"{push_base}/_records?from={seen}")).json()
                    seen += len(records)
                    arrived = {rec_path.rsplit("/", 1)[1]: at for at, rec_path, *_ in records}
                    push_ms.extend((arrived[ref] - t0) * 1000 for ref, t0 in sent.items())
                await asyncio.sleep(0.3)  # let the machine settle between bursts
        finally:
            for c in conns:
                c.close()
    figures = {"http": (pct(http_ms, 50), pct(http_ms, 99))}
    if push_ms:
        figures["push"] = (pct(push_ms, 50), pct(push_ms, 99))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", default="20,100", help="callers released together, comma-separated")
    parser.add_argument("--bursts", type=int, default=10, help="bursts per variant and caller count")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"],
                        help="uvicorn's event loop (union serve: asyncio)")
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"],
                        help="uvicorn's HTTP parser (union serve: h11)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--push-base", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0

    info = machine()
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    print(f"uvicorn loop={args.loop} http={args.http}; {args.bursts} bursts per row", flush=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory(prefix="push-floor-") as tmp:
        work = Path(tmp)
        push_port, app_port = free_port(), free_port()
        push = start("push service", [sys.executable, str(ROOT / "bench" / "dispatch.py"), "--push-service",
                                      "--port", str(push_port)], env=env, cwd=ROOT, ready_path="/_records",
                     port=push_port, log=work / "push.log")
        try:
            app = start("floor app", [sys.executable, __file__, "--serve", "--port", str(app_port),
                                      "--db", str(work / "floor.db"), "--push-base", push.base_url,
                                      "--loop", args.loop, "--http", args.http],
                        env=env, cwd=ROOT, ready_path="/ready", port=app_port, log=work / "app.log")
            try:
                print("| app | callers | HTTP p50 / p99 ms | push p50 / p99 ms |")
                print("|---|---|---|---|")
                for variant in args.variants.split(","):
                    for callers in (int(c) for c in args.callers.split(",")):
                        f = asyncio.run(measure(app.base_url, push.base_url, variant, callers, args.bursts))
                        pushed = "%.1f / %.1f" % f["push"] if "push" in f else "-"
                        print(f"| {variant} | {callers} | {f['http'][0]:.1f} / {f['http'][1]:.1f} | {pushed} |",
                              flush=True)
            finally:
                app.stop()
        finally:
            push.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
