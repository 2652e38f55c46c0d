"""The directory half of ``make bench``: nearest-site search over HTTP against its floors.

``bench_directory(database_url, sites=...)`` measures, against a directory already migrated and
generated (tests/benchmarks/generate.py), the search and its floors in one run:

- **bare SQL**: the directory's own nearest-site statement (``search.search_query``),
  run with asyncpg on one held connection in a loop (queries/s, p50/p99), then on 8
  connections at once;
- **bare litestar**: tests/benchmarks/bare_app.py, a constant JSON endpoint, and one endpoint
  running the same SQL on an asyncpg pool and answering the rows (the floor for litestar +
  asyncpg); both are served by one process;
- **the directory**: the real app, ``GET /api/v1/sites/nearest`` (public, no token);

each HTTP contender served by uvicorn (uvloop + httptools, 1 worker) in its own process on a
free loopback port, loaded by ``wrk -t2 -c50`` through a Lua script that rotates through
request paths with different origins (so nothing can answer from a cache). Every contender
sees the same seeded sequence of origins: points near real Ontario places, weighted by
population, as the sites are.

Two runs per HTTP contender: the maximum rate, then a **paced** run at half of that contender's
own maximum for p50/p99. Pacing: each wrk thread hands out send slots at a fixed interval from
its ``delay()`` hook (clock_gettime through LuaJIT's FFI), so requests leave at the target rate
while a connection is free; latency counts from the send. It is still a closed loop of 50
connections, not an open-loop generator: a request queued behind 50 busy connections is not
counted as waiting (at half load that is rare). Without FFI it falls back to a constant
delay of connections / rate per request, which paces somewhat below the target; the achieved
rate is reported either way. Beside each HTTP contender: the server process's own CPU time
per request during its maximum-rate run (``/proc/<pid>/stat``), and its peak RSS (VmHWM) read
just before it is stopped.

Figures are noisy on a shared 2-core machine (the load generator, PostgreSQL and the server
share it): compare the ratios within one run.

    python -m tests.benchmarks.directory_bench --sites 500 [--seconds 10] [--json out.json]

starts embedded PostgreSQL/NATS (free ports, a temporary state folder), migrates, seeds,
generates ``--sites`` sites, runs ``bench_directory`` and prints the result; with
``--database-url URL`` it prepares that database instead (``--reuse``: it already holds the
generated sites).
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import asyncpg
import msgspec
import uvloop
from litestar import Litestar

from services.directory.app import create_app
from services.directory.schema import MIGRATIONS
from services.directory.search import search_query
from services.directory.seed import load_seed, seed_provider_ids
from services.directory.settings import DirectorySettings
from services.infra.embedded import free_port, running_servers
from services.infra.migrations import apply_migrations
from services.infra.settings import InfraSettings
from tests.benchmarks.bare_app import BENCH_FILTER, BENCH_LIMIT
from tests.benchmarks.generate import generate, places

ROOT = Path(__file__).parents[2]
#: How many different origins the contenders rotate through, and the seed that draws them.
ORIGINS = 256
ORIGIN_SEED = 20260505
#: Origins sit this far (km, one standard deviation) around a place's centre.
ORIGIN_SPREAD_KM = 5.0
SQL_CONNECTIONS = 8
WRK_THREADS = 2
WRK_CONNECTIONS = 50
WARMUP_S = 2
#: Issue 5's targets for the search.
TARGET_RATIO = 0.70
TARGET_P99_MS = 10.0
SERVER_START_TIMEOUT_S = 60.0
DIRECTORY_FACTORY = "tests.benchmarks.directory_bench:create_directory_app_from_env"
BARE_FACTORY = "tests.benchmarks.bare_app:create_bare_app_from_env"


# origins and paths ---------------------------------------------------------------------------
def origins(count: int = ORIGINS, seed: int = ORIGIN_SEED) -> list[tuple[float, float]]:
    """Points near real Ontario places, weighted by population; the same for every contender."""
    rng = random.Random(seed)
    towns = places()
    picks = rng.choices(towns, weights=[p.population for p in towns], k=count)
    points = []
    for town in picks:
        lat = town.lat + rng.gauss(0, ORIGIN_SPREAD_KM / 111)
        lon = town.lon + rng.gauss(0, ORIGIN_SPREAD_KM / (111 * math.cos(math.radians(town.lat))))
        # Rounded as they travel in a URL, so SQL and HTTP see the very same floats.
        points.append((round(lat, 5), round(lon, 5)))
    return points


def directory_path(lat: float, lon: float) -> str:
    query: list[tuple[str, object]] = [("lat", lat), ("lon", lon)]
    query += [("service", code) for code in BENCH_FILTER.services]
    if BENCH_FILTER.language is not None:
        query.append(("language", BENCH_FILTER.language))
    query.append(("limit", BENCH_LIMIT))
    return "/api/v1/sites/nearest?" + urlencode(query)


def bare_path(lat: float, lon: float) -> str:
    return "/nearest?" + urlencode([("lat", lat), ("lon", lon)])


def create_directory_app_from_env() -> Litestar:
    """uvicorn ``--factory`` entry: the real directory app on ``BENCH_DATABASE_URL``."""
    return create_app(
        DirectorySettings(
            database_url=os.environ["BENCH_DATABASE_URL"], load_seed=False, apply_migrations=False
        )
    )


# statistics ----------------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when it is empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


# bare SQL ------------------------------------------------------------------------------------
async def _sql_loop(
    conn: asyncpg.Connection,
    sql: str,
    fixed: Sequence[Any],
    points: Sequence[tuple[float, float]],
    *,
    start: int,
    seconds: float,
    latencies: list[float],
) -> int:
    """Run the query until ``seconds`` have passed; the rows returned, in total."""
    rows = 0
    i = start
    clock = time.perf_counter
    deadline = clock() + seconds
    while True:
        began = clock()
        if began >= deadline:
            return rows
        lat, lon = points[i % len(points)]
        rows += len(await conn.fetch(sql, lat, lon, *fixed))
        latencies.append(clock() - began)
        i += 1


async def bench_sql(
    database_url: str, points: Sequence[tuple[float, float]], *, connections: int, seconds: float
) -> dict[str, float]:
    """The nearest query straight through asyncpg, each task on its own held connection."""
    sql, args = search_query(0.0, 0.0, BENCH_FILTER, BENCH_LIMIT)
    fixed = args[2:]
    conns = [await asyncpg.connect(database_url) for _ in range(connections)]
    try:
        for conn in conns:  # prepare, and warm the cache, outside the measured window
            for lat, lon in points[:20]:
                await conn.fetch(sql, lat, lon, *fixed)
        latencies: list[list[float]] = [[] for _ in conns]
        began = time.perf_counter()
        rows = await asyncio.gather(
            *(
                _sql_loop(
                    conn,
                    sql,
                    fixed,
                    points,
                    start=n * len(points) // connections,
                    seconds=seconds,
                    latencies=latencies[n],
                )
                for n, conn in enumerate(conns)
            )
        )
        elapsed = time.perf_counter() - began
    finally:
        for conn in conns:
            await conn.close()
    merged = sorted(value for each in latencies for value in each)
    return {
        "connections": connections,
        "queries": len(merged),
        "qps": round(len(merged) / elapsed, 1),
        "p50_ms": _ms(percentile(merged, 50)),
        "p99_ms": _ms(percentile(merged, 99)),
        "rows_per_query": round(sum(rows) / max(1, len(merged)), 2),
    }


# HTTP servers --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Server:
    name: str
    port: int
    pid: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def http_get(port: int, path: str, wait_s: float = 5.0) -> tuple[int, bytes]:
    """One HTTP/1.1 GET on a fresh connection: (status, body). Enough for readiness checks."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), wait_s)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), wait_s)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body


def peak_rss_mib(pid: int) -> float | None:
    """VmHWM of a live process, in MiB (None when /proc cannot tell)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.MULTILINE)
    return round(int(found.group(1)) / 1024, 1) if found else None


def _log_tail(log: IO[bytes], lines: int = 30) -> str:
    log.flush()
    log.seek(0)
    return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully (lifespan, pool close)
    try:
        await asyncio.wait_for(proc.wait(), 15)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def serving(
    name: str, factory: str, database_url: str, ready_path: str
) -> AsyncIterator[Server]:
    """``factory`` under uvicorn (uvloop, httptools, 1 worker) in a child process; stopped on
    the way out, whatever happened."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "--factory", factory,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--loop", "uvloop", "--http", "httptools", "--lifespan", "on",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    env = {**os.environ, "BENCH_DATABASE_URL": database_url}
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.create_subprocess_exec(
            *command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"{name} exited at start:\n{_log_tail(log)}")
                with contextlib.suppress(OSError, TimeoutError, IndexError, ValueError):
                    status, _ = await http_get(port, ready_path, wait_s=2)
                    if status == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not answer {ready_path}:\n{_log_tail(log)}")
                await asyncio.sleep(0.1)
            yield Server(name, port, proc.pid)
        finally:
            await _stop(proc)


# wrk -----------------------------------------------------------------------------------------
def ensure_wrk() -> str:
    """The wrk binary; installed from Debian when missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(
            "wrk is not installed and we are not root: run `sudo apt-get install -y wrk`"
        )
    print("installing wrk (apt-get) ...", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "wrk"],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("apt-get installed wrk but it is not on PATH")
    return found


_LUA = """
local paths = {%(paths)s}
local interval_ms = %(interval_ms)s    -- per-thread send interval; nil: as fast as possible
local fallback_ms = %(fallback_ms)s    -- connections / rate, when there is no FFI clock
local now_ms = nil

local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_id", counter)
end

local i = 0
function init(args)
  i = ((thread_id or 1) - 1) * 97   -- threads start at different origins
end

function request()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end

if interval_ms then
  local ok, ffi = pcall(require, "ffi")
  if ok then
    ffi.cdef[[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clk_id, bench_timespec *tp);
    ]]
    local ts = ffi.new("bench_timespec")
    now_ms = function()
      ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
    end
  end
  local next_slot = nil
  function delay()
    if not now_ms then return fallback_ms end
    local t = now_ms()
    -- Behind by more than 100 ms (every connection was busy): drop the debt, do not burst.
    if next_slot == nil or next_slot < t - 100 then next_slot = t end
    local wait = next_slot - t
    next_slot = next_slot + interval_ms
    if wait < 0 then return 0 end
    return wait
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {\\"requests\\": %%.0f, \\"duration_us\\": %%.0f, \\"connect\\": %%.0f, " ..
    "\\"read\\": %%.0f, \\"write\\": %%.0f, \\"status\\": %%.0f, \\"timeout\\": %%.0f, " ..
    "\\"mean_us\\": %%.3f, \\"max_us\\": %%.3f, \\"p50_us\\": %%.3f, \\"p90_us\\": %%.3f, " ..
    "\\"p99_us\\": %%.3f, \\"p999_us\\": %%.3f, \\"paced_by_clock\\": %%s}\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9),
    tostring(interval_ms ~= nil and now_ms ~= nil)))
end
"""


def wrk_script(paths: Sequence[str], rate: float | None) -> str:
    def lua_string(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    if rate is None:
        interval, fallback = "nil", "0"
    else:
        interval = f"{1000 * WRK_THREADS / rate:.6f}"
        fallback = f"{1000 * WRK_CONNECTIONS / rate:.3f}"
    return _LUA % {
        "paths": ", ".join(lua_string(path) for path in paths),
        "interval_ms": interval,
        "fallback_ms": fallback,
    }


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's figures: the ``done()`` hook's JSON line when present, else its text report."""
    found = re.search(r"^BENCH_JSON (\{.*\})\s*$", output, re.MULTILINE)
    if found:
        raw = json.loads(found.group(1))
        seconds = raw["duration_us"] / 1e6
        return {
            "rps": round(raw["requests"] / seconds, 1) if seconds else 0.0,
            "requests": int(raw["requests"]),
            "p50_ms": round(raw["p50_us"] / 1000, 3),
            "p90_ms": round(raw["p90_us"] / 1000, 3),
            "p99_ms": round(raw["p99_us"] / 1000, 3),
            "p999_ms": round(raw["p999_us"] / 1000, 3),
            "max_ms": round(raw["max_us"] / 1000, 3),
            "non_2xx": int(raw["status"]),
            "socket_errors": int(raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]),
            "paced_by_clock": bool(raw["paced_by_clock"]),
        }
    rate = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if rate is None:
        raise ValueError(f"no Requests/sec in wrk's output:\n{output}")
    result: dict[str, Any] = {"rps": float(rate.group(1)), "paced_by_clock": None}
    total = re.search(r"(\d+) requests in", output)
    result["requests"] = int(total.group(1)) if total else None
    for pct, value, unit in re.findall(r"^\s*([\d.]+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output, re.M):
        key = {50.0: "p50_ms", 90.0: "p90_ms", 99.0: "p99_ms"}.get(float(pct))
        if key:
            result[key] = round(float(value) * _UNIT_MS[unit], 3)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    result["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    result["socket_errors"] = sum(int(n) for n in errors.groups()) if errors else 0
    return result


async def run_wrk(
    wrk: str, server: Server, paths: Sequence[str], *, seconds: float, rate: float | None = None
) -> dict[str, Any]:
    """One wrk run against ``server``: as fast as it goes, or paced at ``rate`` requests/s."""
    duration = max(1, round(seconds))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-", delete=False) as f:
        f.write(wrk_script(paths, rate))
        script = f.name
    command = [
        wrk, f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{duration}s", "--latency",
        "--timeout", "5s", "-s", script, server.base_url,
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), duration + 30)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    finally:
        os.unlink(script)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}")
    result = parse_wrk(out.decode(errors="replace"))
    if rate is not None:
        result["target_rps"] = round(rate, 1)
    return result


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used, in seconds (None when /proc cannot tell)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    # After "pid (comm)": state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_http(
    wrk: str, server: Server, paths: Sequence[str], *, seconds: float
) -> dict[str, Any]:
    """Warm up, the maximum rate, then a paced run at half of it; peak RSS at the end, and the
    server's own CPU time per request during the maximum-rate run."""
    await run_wrk(wrk, server, paths, seconds=WARMUP_S)
    cpu_before = cpu_seconds(server.pid)
    best = await run_wrk(wrk, server, paths, seconds=seconds)
    cpu_after = cpu_seconds(server.pid)
    if cpu_before is not None and cpu_after is not None and best["requests"]:
        best["server_cpu_ms_per_request"] = round(
            (cpu_after - cpu_before) * 1000 / best["requests"], 3
        )
    half = await run_wrk(wrk, server, paths, seconds=seconds, rate=best["rps"] / 2)
    return {"max": best, "half": half, "peak_rss_mib": peak_rss_mib(server.pid)}


async def _check_answers(server: Server, paths: Sequence[str], count: Any, label: str) -> list[int]:
    """The first few paths answer 200 with results: a benchmark of errors would be worthless."""
    found = []
    for path in paths[:5]:
        status, body = await http_get(server.port, path)
        if status != 200:
            raise RuntimeError(f"{label} {path} answered {status}: {body[:300]!r}")
        found.append(count(msgspec.json.decode(body)))
    return found


# the benchmark -------------------------------------------------------------------------------
def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


async def bench_directory(
    database_url: str, *, sites: int, seconds: float = 10.0
) -> dict[str, object]:
    """Nearest-site search: bare SQL, bare litestar (+ asyncpg), the directory; see the module
    docstring. ``database_url``: migrated, seeded and generated with ``sites`` sites."""
    wrk = ensure_wrk()
    points = origins()
    started = time.monotonic()
    print(f"directory bench, {sites:,} sites: bare SQL ...", flush=True)
    one = await bench_sql(database_url, points, connections=1, seconds=seconds)
    many = await bench_sql(database_url, points, connections=SQL_CONNECTIONS, seconds=seconds)

    bare_paths = [bare_path(lat, lon) for lat, lon in points]
    print("  bare litestar (constant, then + asyncpg) ...", flush=True)
    async with serving("bare litestar", BARE_FACTORY, database_url, "/const") as bare:
        bare_rows = await _check_answers(bare, bare_paths, len, "bare litestar")
        const = await bench_http(wrk, bare, ["/const"], seconds=seconds)
        floor = await bench_http(wrk, bare, bare_paths, seconds=seconds)

    directory_paths = [directory_path(lat, lon) for lat, lon in points]
    print("  the directory ...", flush=True)
    async with serving("directory", DIRECTORY_FACTORY, database_url, "/health") as directory:
        directory_rows = await _check_answers(
            directory, directory_paths, lambda body: len(body["results"]), "directory"
        )
        if directory_rows != bare_rows:
            raise RuntimeError(f"directory answered {directory_rows} rows, bare {bare_rows}")
        served = await bench_http(wrk, directory, directory_paths, seconds=seconds)

    direct_rps = served["max"]["rps"]
    p99_half = served["half"]["p99_ms"]
    ratio = _ratio(direct_rps, floor["max"]["rps"])
    result: dict[str, object] = {
        "sites": sites,
        "seconds": seconds,
        "search": {
            "services": list(BENCH_FILTER.services),
            "language": BENCH_FILTER.language,
            "limit": BENCH_LIMIT,
            "origins": len(points),
            "rows_per_search": one["rows_per_query"],
        },
        "load": {
            "tool": "wrk",
            "threads": WRK_THREADS,
            "connections": WRK_CONNECTIONS,
            "half_rate": "paced closed loop (send slots per wrk thread), latency from send",
            "server": "uvicorn, uvloop + httptools, 1 worker, own process",
        },
        "bare_sql": {"one_connection": one, "connections_8": many},
        "bare_litestar_const": const,
        "bare_litestar_asyncpg": floor,
        "directory": served,
        "ratios": {
            "directory_vs_bare_litestar_asyncpg": ratio,
            "directory_vs_bare_sql_1conn": _ratio(direct_rps, one["qps"]),
            "directory_vs_bare_sql_8conn": _ratio(direct_rps, many["qps"]),
            "bare_litestar_asyncpg_vs_bare_sql_8conn": _ratio(floor["max"]["rps"], many["qps"]),
        },
        "targets": {
            "ratio_min": TARGET_RATIO,
            "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
            "p99_half_ms_max": TARGET_P99_MS,
            "p99_half_ms": p99_half,
            "p99_met": p99_half < TARGET_P99_MS,
        },
        "directory_peak_rss_mib": served["peak_rss_mib"],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    print(format_result(result), flush=True)
    return result


def format_result(result: dict[str, Any]) -> str:
    sql1, sql8 = result["bare_sql"]["one_connection"], result["bare_sql"]["connections_8"]
    search = result["search"]
    lines = [
        f"directory search, {result['sites']:,} sites (services {'+'.join(search['services'])},"
        f" {search['language']}, limit {search['limit']}, {search['rows_per_search']} rows;"
        f" wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, {result['seconds']:g} s per run)",
        f"  {'contender':<34}{'max/s':>8}{'half/s':>8}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'CPU ms':>8}{'RSS MiB':>9}",
    ]
    for sql, label in [
        (sql1, "bare SQL, asyncpg, 1 connection"),
        (sql8, "bare SQL, 8 connections"),
    ]:
        lines.append(
            f"  {label:<34}{sql['qps']:>8,.0f}{'':>8}{sql['p50_ms']:>8.2f}{sql['p99_ms']:>8.2f}"
        )
    for key, label in [
        ("bare_litestar_const", "bare litestar, constant JSON"),
        ("bare_litestar_asyncpg", "bare litestar + asyncpg"),
        ("directory", "directory /api/v1/sites/nearest"),
    ]:
        item = result[key]
        best, half = item["max"], item["half"]
        rss, cpu = item["peak_rss_mib"], best.get("server_cpu_ms_per_request")
        lines.append(
            f"  {label:<34}{best['rps']:>8,.0f}{half['rps']:>8,.0f}"
            f"{half['p50_ms']:>8.2f}{half['p99_ms']:>8.2f}"
            f"{'' if cpu is None else f'{cpu:.2f}':>8}{'' if rss is None else f'{rss:.0f}':>9}"
        )
        errors = best["non_2xx"] + best["socket_errors"] + half["non_2xx"] + half["socket_errors"]
        if errors:
            lines.append(f"    !! {errors} non-2xx answers or socket errors")
    ratios, targets = result["ratios"], result["targets"]
    lines += [
        "  (SQL: latency in its loop. HTTP: p50/p99 of the run paced at half the contender's own"
        " max; CPU ms: the server's own CPU per request at max; RSS: its peak)",
        f"  directory / bare litestar+asyncpg: {ratios['directory_vs_bare_litestar_asyncpg']}"
        f" (target >= {targets['ratio_min']}: {'met' if targets['ratio_met'] else 'MISSED'})",
        f"  directory p99 at half its max: {targets['p99_half_ms']} ms"
        f" (target < {targets['p99_half_ms_max']}: {'met' if targets['p99_met'] else 'MISSED'})",
        f"  directory / bare SQL: {ratios['directory_vs_bare_sql_1conn']} of 1 connection,"
        f" {ratios['directory_vs_bare_sql_8conn']} of 8; took {result['elapsed_s']} s",
    ]
    return "\n".join(lines)


# command line --------------------------------------------------------------------------------
async def _prepare(database_url: str, sites: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await apply_migrations(conn, "directory", MIGRATIONS)
        await load_seed(conn)
    finally:
        await conn.close()
    began = time.monotonic()
    await generate(database_url, sites)
    print(f"generated {sites:,} sites in {time.monotonic() - began:.1f} s", flush=True)


async def _main(args: argparse.Namespace) -> dict[str, object]:
    if args.database_url:
        if not args.reuse:
            await _prepare(args.database_url, args.sites)
        return await bench_directory(args.database_url, sites=args.sites, seconds=args.seconds)
    state_dir = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    try:
        settings = InfraSettings(state_dir=state_dir, pg_port=free_port(), nats_port=free_port())
        with running_servers(settings, provider_ids=seed_provider_ids(), durable=False) as servers:
            await _prepare(servers.database_url, args.sites)
            return await bench_directory(
                servers.database_url, sites=args.sites, seconds=args.seconds
            )
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument(
        "--database-url", help="use this PostgreSQL (migrated, seeded, generated here)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --database-url: it already holds the --sites generated sites, use them as is",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        result = runner.run(_main(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
