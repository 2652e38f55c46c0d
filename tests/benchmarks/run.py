"""`make bench`: the router and the directory search at 500, 100,000 and 1,000,000 sites, each
beside the same work done by the bare dependencies in the same run; at 500 sites also the
scale-out run (1, 2 and 3 routers on a 3-node NATS cluster, tests/benchmarks/cluster_bench.py)
and a burst of 100,000 referrals into one router (tests/benchmarks/burst_bench.py).
Prints a table and writes it, with every figure, to bench-results/bench-<time>.json (not in git).

The router runs once per transaction mode (``ROUTER_TRANSACTION``: ``message``, the old path,
then ``batch``, one transaction per fetched batch); the table's router is the last mode, with
batch/message beside it. Its floors are the same per-referral work by the bare dependencies:
one transaction per referral, 8 at once ("floor"), and one per fetched batch of 100 with its
outbox as one JetStream atomic batch ("batched floor"; tests/benchmarks/floors.py).

Not a test: nothing here asserts a time. Figures are noisy on 2 shared cores; compare the
ratios within one run.
"""

import argparse
import asyncio
import datetime
import json
import tempfile
from pathlib import Path
from typing import Any

from services.directory.seed import seed_provider_ids
from services.infra.embedded import free_port, running_servers
from services.infra.settings import InfraSettings
from tests.benchmarks.burst_bench import CAPACITY, bench_burst, table as burst_table
from tests.benchmarks.cluster_bench import bench_cluster
from tests.benchmarks.router_bench import MODES, bench_router, prepare

RESULTS = Path(__file__).parents[2] / "bench-results"
SIZES = (500, 100_000, 1_000_000)
#: The directory size of the scale-out run (tests/benchmarks/cluster_bench.py): Ontario today.
CLUSTER_SITES = 500
#: Referrals of the burst benchmark (tests/benchmarks/burst_bench.py).
BURST = 100_000


async def _directory(database_url: str, sites: int, seconds: float) -> dict[str, Any]:
    try:
        from tests.benchmarks.directory_bench import bench_directory
    except ImportError as exc:  # pragma: no cover - while the directory bench is missing
        return {"error": f"directory benchmark unavailable: {exc}"}
    return await bench_directory(database_url, sites=sites, seconds=seconds)


def _dig(source: dict[str, Any], *path: str) -> str:
    node: Any = source
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return "-"
        node = node[key]
    return str(node)


def row(sites: int, router: dict[str, Any], directory: dict[str, Any]) -> str:
    cells = [
        f"{sites:,}",
        _dig(router, "router_per_second"),
        _dig(router, "message_router_per_second"),
        _dig(router, "batch_vs_message"),
        _dig(router, "floor_per_second"),
        _dig(router, "batched_floor_per_second"),
        _dig(router, "router_vs_floor"),
        _dig(router, "router_vs_batched_floor"),
        _dig(router, "router_p99_ms_at_half"),
        _dig(directory, "directory", "max", "rps"),
        _dig(directory, "bare_litestar_asyncpg", "max", "rps"),
        _dig(directory, "ratios", "directory_vs_bare_litestar_asyncpg"),
        _dig(directory, "directory", "half", "p99_ms"),
        _dig(directory, "bare_sql", "one_connection", "qps"),
        _dig(router, "router_peak_rss_mb"),
        _dig(directory, "directory_peak_rss_mib"),
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = (
    "| sites | router ref/s | message router ref/s | batch/message | floor ref/s "
    "| batched floor ref/s | router/floor | router/batched floor | router p99 ms @½ "
    "| search req/s | bare litestar req/s | search/bare | search p99 ms @½ | bare SQL q/s "
    "| router RSS MB | directory RSS MB |\n" + "|---" * 16 + "|"
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--sizes", default=",".join(str(s) for s in SIZES), help="directory sizes, in sites"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds of each run at half rate"
    )
    parser.add_argument(
        "--count", type=int, default=3000, help="referrals per router (and floor) burst"
    )
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="ROUTER_TRANSACTION values the router runs with at each size, in order; the last "
        "is the table's router, and with both, batch/message is printed "
        f"(default {','.join(MODES)}; a router that does not read the setting runs today's "
        "path for each)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        default=BURST,
        help=f"referrals of the burst benchmark, published at once into one router "
        f"(default {BURST:,}; 0 skips it)",
    )
    parser.add_argument(
        "--burst-sites",
        type=int,
        default=CLUSTER_SITES,
        help="the size (one of --sizes) the burst runs at, after the other benchmarks of that "
        f"size; its sites get {CAPACITY:,} places each (default {CLUSTER_SITES})",
    )
    parser.add_argument(
        "--burst-modes",
        default="batch",
        help="ROUTER_TRANSACTION of the burst's router; several, comma-separated, run one "
        "after another (default batch; 'message' drains 100,000 in about 8 minutes)",
    )
    parser.add_argument(
        "--burst-timeout", type=float, default=1800.0, help="seconds to wait for a burst to drain"
    )
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="servers without per-write fsync (PostgreSQL fsync off, JetStream syncs every 2 "
        "minutes): shows what the disk costs; the default is the durable configuration",
    )
    parser.add_argument(
        "--no-cluster", action="store_true", help="skip the scale-out run (1, 2, 3 routers)"
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = tuple(m for m in args.modes.split(",") if m)
    state = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    infra = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())
    report: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).isoformat(),
        "servers": "embedded, "
        + (
            "no per-write fsync (PostgreSQL fsync off; JetStream sync_interval 2m)"
            if args.no_fsync
            else "durable (PostgreSQL fsync on; JetStream sync_interval always)"
        ),
        "sizes": {},
    }
    rows = []
    with running_servers(
        infra, provider_ids=seed_provider_ids(), durable=not args.no_fsync
    ) as servers:
        for sites in sizes:
            print(f"\n== {sites:,} sites ==", flush=True)
            asyncio.run(prepare(servers, sites))
            router = asyncio.run(
                bench_router(servers, count=args.count, seconds=args.seconds, modes=modes)
            )
            directory = asyncio.run(_directory(servers.database_url, sites, args.seconds))
            report["sizes"][str(sites)] = {"router": router, "directory": directory}
            rows.append(row(sites, router, directory))
            if sites == CLUSTER_SITES and not args.no_cluster:
                print(f"\n== scale-out: 1, 2, 3 routers on a 3-node cluster, {sites:,} sites ==")
                report["cluster"] = asyncio.run(
                    bench_cluster(servers.database_url, count=args.count)
                )
            if sites == args.burst_sites and args.burst:
                # Last at this size: it gives the sites room for the whole burst (the next
                # size's generation replaces them).
                report["burst"] = []
                for n, mode in enumerate(m for m in args.burst_modes.split(",") if m):
                    print(f"\n== burst: {args.burst:,} referrals, {sites:,} sites, {mode} ==")
                    report["burst"].append(
                        asyncio.run(
                            bench_burst(
                                servers,
                                referrals=args.burst,
                                transaction=mode,
                                within=args.burst_timeout,
                                seed=31 + n,
                            )
                        )
                    )
    table = HEADER + "\n" + "\n".join(rows)
    if "cluster" in report:
        table += "\n\nscale-out (" + report["cluster"]["cluster"] + f", {CLUSTER_SITES} sites)\n"
        table += report["cluster"]["table"]
    if report.get("burst"):
        table += f"\n\nburst ({args.burst_sites:,} sites, durable servers)\n"
        table += burst_table(report["burst"])
    report["table"] = table
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\n{report['servers']}\n{table}\n\nwritten to {out}", flush=True)


if __name__ == "__main__":
    main()
