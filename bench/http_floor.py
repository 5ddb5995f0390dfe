"""HTTP floor: requests per second and p50/p99 latency of the union app's
`/healthz` and of a logged-in member's home page under concurrent load, printed
beside the same figures for a bare Starlette app (bench/bare_app.py) measured on
the same machine in the same run, with the ratio app/bare.

    .venv/bin/python bench/http_floor.py                      # embedded SQLite
    .venv/bin/python bench/http_floor.py --postgres           # a throw-away PostgreSQL database
    .venv/bin/python bench/http_floor.py --database-url postgresql://...  # an empty database of yours

What it does, all on 127.0.0.1:
1. a fresh temporary data folder (and, with --postgres, a fresh database);
2. `union demo --members N` (default 200) for a realistic database, then one
   more member with a known PIN, created through union.members.enrol;
3. `union serve` in a subprocess, exactly as an operator would start it
   (one uvicorn process, jobs embedded), and bench/bare_app.py in another;
4. one member login through the real form (CSRF and all) for a session cookie;
5. for each endpoint: a warm-up, then C concurrent httpx clients for a fixed
   time (bounded also by a request count), recording every latency.

The load generator is a Python process on the same machine: it competes with the
server for the same cores, so the absolute figures are a floor for this machine,
not the server's capacity; the ratio to the bare app is the useful number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_PIN = "8642"
PG_ADMIN = os.environ.get("UNION_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- The machine ------------------------------------------------------------------

def machine() -> dict[str, str]:
    info = {"cpus": str(os.cpu_count())}
    try:
        info["cpus usable"] = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        pass
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        info["cpu model"] = model.group(1).strip() if model else "unknown"
    except OSError:
        info["cpu model"] = "unknown"
    try:
        kib = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        info["memory"] = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, AttributeError):
        info["memory"] = "unknown"
    try:
        info["load avg"] = " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1/5/15 min, at the end of the run)"
    except OSError:
        pass
    info["python"] = f"{platform.python_implementation()} {platform.python_version()}"
    info["os"] = platform.platform()
    versions = []
    for name in ("uvicorn", "starlette", "sqlalchemy", "httpx"):
        try:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        except Exception:  # noqa: BLE001
            pass
    extras = [m for m in ("uvloop", "httptools") if _importable(m)]
    info["stack"] = ", ".join(versions) + f"; uvicorn extras: {', '.join(extras) or 'none (asyncio loop, h11)'}"
    return info


def _importable(module: str) -> bool:
    from importlib.util import find_spec

    return find_spec(module) is not None


# --- Servers ----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    proc: subprocess.Popen
    base_url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # uvicorn shuts down cleanly on SIGINT
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start(name: str, argv: list[str], *, env: dict, cwd: Path, ready_path: str, port: int, log: Path,
          timeout: float = 60) -> Server:
    fh = log.open("wb")
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode}; its log:\n{log.read_text()}")
        try:
            if httpx.get(base + ready_path, timeout=2).status_code == 200:
                return Server(name, proc, base, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not answer {ready_path} within {timeout:.0f} s; its log:\n{log.read_text()}")


def run(argv: list[str], *, env: dict, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


# --- Data -------------------------------------------------------------------------

async def create_bench_member(env: dict) -> str:
    """One member with a known PIN, enrolled the way the app does it."""
    from union import members
    from union.models import Branch
    from union.services import build_services
    from union.settings import Settings

    settings = Settings(_env_file=None, data_dir=Path(env["UNION_DATA_DIR"]),
                        database_url=env.get("UNION_DATABASE_URL") or None, redis_url=None)
    services = await build_services(settings, jobs_backend="none")
    try:
        async with services.sessions() as db:
            from sqlalchemy import select

            if (await db.execute(select(Branch).where(Branch.code == "BLR"))).scalar_one_or_none() is None:
                db.add(Branch(code="BLR", name="Bengaluru", lat=12.9716, lon=77.5946))
                await db.flush()
            member = await members.enrol(
                db, data=members.NewMember(working_name="Bench Member", branch_code="BLR", language="en",
                                           pin=BENCH_PIN),
                vault=services.vault, phone_hash=services.phone_hash, actor=None)
            await db.commit()
            return member.member_no
    finally:
        await services.close()


async def _pg(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def member_session_cookie(base_url: str, member_no: str) -> dict[str, str]:
    """Log in once through the real member login form."""
    with httpx.Client(base_url=base_url, follow_redirects=False, timeout=30) as client:
        page = client.get("/login/member")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        if not token:
            raise SystemExit("no CSRF token on /login/member")
        r = client.post("/login/member", data={"csrf_token": token.group(1), "member_no": member_no,
                                                "pin": BENCH_PIN})
        if r.status_code != 303 or r.headers.get("location") != "/home/member":
            raise SystemExit(f"member login failed: {r.status_code} {r.headers.get('location')}\n{r.text[:500]}")
        home = client.get("/home/member")
        if home.status_code != 200 or member_no not in home.text:
            raise SystemExit(f"the member home page did not show the member: {home.status_code}")
        return dict(client.cookies)


# --- Load -------------------------------------------------------------------------

@dataclass
class Result:
    label: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def merge(self, other: "Result") -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.seconds += other.seconds
        self.latencies += other.latencies

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def hammer(label: str, url: str, *, cookies: dict, concurrency: int, duration: float, max_requests: int,
                 warmup: float, must_contain: str | None) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, cookies=cookies, follow_redirects=False) as client:
        first = await client.get(url)
        if first.status_code != 200 or (must_contain and must_contain not in first.text):
            raise SystemExit(f"{label}: {url} answered {first.status_code} without the expected content")

        async def phase(seconds: float, budget: int, result: Result | None) -> None:
            end = time.perf_counter() + seconds
            sent = 0

            async def client_loop() -> None:
                nonlocal sent
                while sent < budget and time.perf_counter() < end:
                    sent += 1
                    t0 = time.perf_counter()
                    try:
                        r = await client.get(url)
                        ok = r.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    if result is not None:
                        result.latencies.append(time.perf_counter() - t0)
                        result.requests += 1
                        result.errors += 0 if ok else 1

            await asyncio.gather(*(client_loop() for _ in range(concurrency)))

        if warmup > 0:
            await phase(warmup, max_requests, None)
        result = Result(label)
        t0 = time.perf_counter()
        await phase(duration, max_requests, result)
        result.seconds = time.perf_counter() - t0
        return result


# --- Report -----------------------------------------------------------------------

def report(info: dict, args, database: str, pairs: list[tuple[Result, Result]]) -> None:
    print()
    print("HTTP floor: union app vs bare Starlette, same machine, same run")
    for key, value in info.items():
        print(f"  {key:<12} {value}")
    print(f"  database     {database}")
    print(f"  load         {args.concurrency} concurrent clients (httpx.AsyncClient, keep-alive), "
          f"{args.rounds} rounds of {args.duration:g} s per endpoint, app and bare alternating, "
          f"after {args.warmup:g} s warm-up; at most {args.max_requests} requests a round")
    print("  NOTE: the load generator runs on the same machine and shares its cores with the server;"
          " absolute figures are a floor, compare the ratios.")
    print()
    header = f"{'endpoint':<28}{'requests':>10}{'errors':>8}{'rps':>10}{'p50 ms':>10}{'p99 ms':>10}"
    print(header)
    print("-" * len(header))
    for app, bare in pairs:
        for r in (app, bare):
            print(f"{r.label:<28}{r.requests:>10}{r.errors:>8}{r.rps:>10.0f}{r.pct(0.50):>10.1f}{r.pct(0.99):>10.1f}")
        print(f"{'  ratio app/bare':<28}{'':>10}{'':>8}{app.rps / bare.rps if bare.rps else float('nan'):>10.2f}"
              f"{app.pct(0.50) / bare.pct(0.50):>10.2f}{app.pct(0.99) / bare.pct(0.99):>10.2f}")
        print()


# --- Main -------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of measured load per endpoint and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load first")
    parser.add_argument("--rounds", type=int, default=3,
                        help="app and bare alternate this many times per endpoint (figures are pooled)")
    parser.add_argument("--max-requests", type=int, default=200_000, help="upper bound per endpoint and phase")
    parser.add_argument("--demo-members", type=int, default=200, help="demo members to load first (0: none)")
    db = parser.add_mutually_exclusive_group()
    db.add_argument("--database-url", help="an empty database to use instead of embedded SQLite")
    db.add_argument("--postgres", action="store_true",
                    help=f"create a throw-away database on {PG_ADMIN.rsplit('/', 1)[0]} and drop it afterwards")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder (logs, database)")
    args = parser.parse_args()
    args.duration = min(args.duration, 300.0)  # bounded whatever is asked
    args.warmup = min(args.warmup, 60.0)
    args.concurrency = max(1, min(args.concurrency, 1000))
    args.rounds = max(1, min(args.rounds, 20))

    workdir = Path(tempfile.mkdtemp(prefix="union-bench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNION_")}
    env.update({"UNION_DATA_DIR": str(workdir / "var"), "UNION_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")})
    pg_name = None
    if args.postgres:
        pg_name = f"union_bench_{uuid.uuid4().hex[:10]}"
        asyncio.run(_pg(f"CREATE DATABASE {pg_name}"))
        env["UNION_DATABASE_URL"] = PG_ADMIN.rsplit("/", 1)[0] + "/" + pg_name
    elif args.database_url:
        env["UNION_DATABASE_URL"] = args.database_url
    database = "PostgreSQL" if "UNION_DATABASE_URL" in env and "postgres" in env["UNION_DATABASE_URL"] else \
        "SQLite (embedded, WAL)" if "UNION_DATABASE_URL" not in env else env["UNION_DATABASE_URL"].split(":")[0]
    union_cli = [sys.executable, "-m", "union.cli"]
    servers: list[Server] = []
    try:
        print(f"Preparing in {workdir} …", flush=True)
        if args.demo_members > 0:
            t0 = time.perf_counter()
            run(union_cli + ["demo", "--members", str(args.demo_members)], env=env, cwd=workdir)
            print(f"  demo data: {args.demo_members} members in {time.perf_counter() - t0:.1f} s", flush=True)
        else:
            run(union_cli + ["migrate"], env=env, cwd=workdir)
        member_no = asyncio.run(create_bench_member(env))

        app_port, bare_port = free_port(), free_port()
        servers.append(start("union serve", union_cli + ["serve", "--host", "127.0.0.1", "--port", str(app_port)],
                             env=env, cwd=workdir, ready_path="/healthz", port=app_port, log=workdir / "app.log"))
        servers.append(start("bare app", [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(bare_port)],
                             env=env, cwd=workdir, ready_path="/json", port=bare_port, log=workdir / "bare.log"))
        app, bare = servers[0].base_url, servers[1].base_url
        cookies = member_session_cookie(app, member_no)
        print(f"  logged in as member {member_no}; measuring …", flush=True)

        load = dict(concurrency=args.concurrency, duration=args.duration, max_requests=args.max_requests,
                    warmup=args.warmup)

        targets = [
            (("app  GET /healthz", app + "/healthz", {}, '"ok"'), ("bare GET /json", bare + "/json", {}, '"ok"')),
            (("app  GET /home/member", app + "/home/member", cookies, member_no),
             ("bare GET /html", bare + "/html", {}, "Hello")),
        ]

        async def measure() -> list[tuple[Result, Result]]:
            # App and bare alternate, round after round, so background load on a shared
            # machine falls on both alike.
            pairs = []
            for pair in targets:
                merged = [Result(label) for label, *_ in pair]
                for n in range(args.rounds):
                    for total, (label, url, jar, expect) in zip(merged, pair):
                        total.merge(await hammer(label, url, cookies=jar, must_contain=expect,
                                                 **{**load, "warmup": load["warmup"] if n == 0 else 0.0}))
                pairs.append(tuple(merged))
            return pairs

        pairs = asyncio.run(measure())
        report(machine(), args, database, pairs)
    finally:
        for server in servers:
            server.stop()
        if pg_name:
            asyncio.run(_pg(f"DROP DATABASE IF EXISTS {pg_name} WITH (FORCE)"))
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
