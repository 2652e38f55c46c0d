"""Scale-out benchmark: routed referrals per second (request published -> offer received) with
1, 2 and 3 router processes on a 3-node NATS JetStream cluster (REFERRALS at R3, fsync on every
write), all sharing one PostgreSQL. Same burst for each count, a fresh stream each time.

    python -m tests.benchmarks.cluster_bench --sites 500

Not a test: nothing here asserts a time. On 2 cores the routers, the three nats-servers,
PostgreSQL and the load generator share the same CPUs, so the ratios show where that limit is.
"""

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient

from contracts.subjects import STREAM, requested_subject
from services.directory.seed import seed_provider_ids
from services.infra.embedded import free_port, running_servers
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings
from tests.benchmarks.router_bench import EO, Timer, drive, prepare, requests, until_ready
from tests.faults.cluster import NatsCluster
from tests.referrals import SYSTEM

ROUTER_COUNTS = (1, 2, 3)


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU ticks of the whole machine since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU seconds used during a run by the routers, the NATS nodes, PostgreSQL (postmaster and
    its backends, including those opened during the run) and this load generator, and how busy
    the whole machine was (other work on the machine counts there too)."""

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.before = {name: self._per_pid(pids()) for name, pids in groups.items()}
        self.own = time.process_time()
        self.machine = machine_busy()
        self.started = time.monotonic()

    @staticmethod
    def _per_pid(pids: list[int]) -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in pids}

    def result(self) -> dict[str, Any]:
        used: dict[str, float] = {}
        for name, pids in self.groups.items():
            after = self._per_pid(pids())
            before = self.before[name]
            used[name] = round(sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items()), 1)
        used["load generator"] = round(time.process_time() - self.own, 1)
        busy, total = machine_busy()
        wall = time.monotonic() - self.started
        return {
            "cpu_s": used,
            "cores_used": {name: round(value / wall, 2) for name, value in used.items()},
            "machine_busy_pct": round(
                100 * (busy - self.machine[0]) / max(1, total - self.machine[1]), 1
            ),
        }


def postgres_pids(database_url: str) -> list[int]:
    """The postmaster listening on the URL's port (from its pid file) and its children."""
    port = database_url.rsplit(":", 1)[1].split("/", 1)[0]
    for pid_file in Path(tempfile.gettempdir()).glob("eo-bench-state-*/postgres/postmaster.pid"):
        lines = pid_file.read_text().splitlines()
        if len(lines) > 3 and lines[3].strip() == port:
            postmaster = int(lines[0])
            return [postmaster, *children(postmaster)]
    return []


def start_router(database_url: str, nats_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "EO_"))}
    env |= {
        "DATABASE_URL": database_url,
        "NATS_URL": nats_url,
        "ROUTER_PORT": str(port),
        "ROUTER_STREAM_REPLICAS": "3",
        "EO_LOG_LEVEL": "warning",
    }
    with log.open("wb") as out:
        return subprocess.Popen([str(EO), "router"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def one_count(
    nc: NatsClient, cluster: NatsCluster, database_url: str, routers: int, count: int, seed: int
) -> dict[str, Any]:
    """Max throughput of ``routers`` processes on a fresh R3 stream."""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream(timeout=30).delete_stream(STREAM)
    logs = Path(tempfile.mkdtemp(prefix="eo-cluster-bench-"))
    ports = [free_port() for _ in range(routers)]
    processes = [
        start_router(database_url, cluster.url(), port, logs / f"router-{port}.log")
        for port in ports
    ]
    try:
        for port, process in zip(ports, processes, strict=True):
            await until_ready(port, process, logs / f"router-{port}.log")
        timer = Timer()
        subs = [
            await nc.subscribe(subject, cb=timer.on_result, pending_msgs_limit=10_000_000)
            for subject in ("referral.offered.*", "referral.status.*")
        ]
        burst = requests(count, seed)
        meter = CpuMeter(
            {
                "routers": lambda: [p.pid for p in processes],
                "nats nodes": lambda: [n.process.pid for n in cluster.nodes if n.process],
                "postgres": lambda: postgres_pids(database_url),
            }
        )
        took = await drive(nc, requested_subject(SYSTEM), burst, timer, rate=None)
        cpu = meter.result()
        for sub in subs:
            await sub.unsubscribe()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        shutil.rmtree(logs, ignore_errors=True)
    return {
        "routers": routers,
        "per_second": round(count / took, 1),
        "seconds": round(took, 2),
        **cpu,
    }


async def bench_cluster(
    database_url: str, *, count: int = 3000, seed: int = 21, counts: tuple[int, ...] = ROUTER_COUNTS
) -> dict[str, Any]:
    """Routed referrals per second with each number of routers, and the ratio to one."""
    root = Path(tempfile.mkdtemp(prefix="eo-cluster-bench-nats-"))
    cluster = NatsCluster(root, durable=True)
    cluster.start()
    try:
        await cluster.wait_ready()
        nc = await nats.connect(**cluster.connect_options(OPERATOR_USER), max_reconnect_attempts=-1)
        try:
            runs = []
            for n in counts:
                runs.append(await one_count(nc, cluster, database_url, n, count, seed + n))
                print(json.dumps(runs[-1]), flush=True)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream(timeout=30).delete_stream(STREAM)
        finally:
            await nc.close()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    base = runs[0]["per_second"]
    for run in runs:
        run["vs_one_router"] = round(run["per_second"] / base, 2) if base else None
    result = {
        "cluster": "3 nats-server nodes on loopback, REFERRALS at R3, sync_interval always",
        "referrals_per_run": count,
        "runs": runs,
        "cpus": os.cpu_count(),
        "table": table(runs),
    }
    print(result["table"], flush=True)
    return result


def table(runs: list[dict[str, Any]]) -> str:
    """One row per router count; CPU as cores used on average during the burst."""
    rows = []
    for run in runs:
        cores = run.get("cores_used", {})
        cells = [
            run["routers"],
            run["per_second"],
            run["vs_one_router"],
            run["seconds"],
            run.get("machine_busy_pct", "-"),
            *(cores.get(k, "-") for k in ("routers", "nats nodes", "postgres", "load generator")),
        ]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    header = (
        "| routers | routed ref/s | vs 1 router | s per burst | machine busy % | cores: routers "
        "| cores: 3 nats nodes | cores: postgres | cores: load generator |\n" + "|---" * 9 + "|"
    )
    return header + "\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--count", type=int, default=3000)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    infra = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())
    started = time.monotonic()
    with running_servers(infra, provider_ids=seed_provider_ids(), durable=True) as servers:
        asyncio.run(prepare(servers, args.sites))
        asyncio.run(bench_cluster(servers.database_url, count=args.count))
    print(f"{time.monotonic() - started:.0f} s in all", flush=True)


if __name__ == "__main__":
    main()
