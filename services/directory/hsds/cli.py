"""``eo hsds``: import HSDS 3.0 data into the directory, export the directory as HSDS."""

import argparse
import asyncio
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from services.directory.hsds.importer import Plan
from services.directory.hsds.transfer import (
    HsdsInputError,
    export_directory,
    import_tables,
    load,
    report_csv,
)
from services.directory.schema import MIGRATIONS
from services.infra.embedded import database_only as database
from services.infra.migrations import apply_migrations
from services.infra.settings import InfraSettings

DESCRIPTION = """\
Open Referral HSDS 3.0 (https://openreferral.org/), the format directories exchange.

import: an HSDS JSON file (one object, a list, an API page, or tabular.json) or a tabular
datapackage (a folder of CSVs, or its datapackage.json). Records are upserted by id; what
does not fit is reported row by row (--report FILE writes the report as CSV). Everything is
applied in one transaction: all of it or nothing. --dry-run tries it and rolls back.

export: the whole directory as an HSDS datapackage (datapackage.json and one CSV per table),
identical for identical data.

Uses DATABASE_URL; otherwise the embedded PostgreSQL: that of a running `eo run`, or started
for the command. Applies the directory's pending migrations first, as the directory does.
"""


def add_hsds_commands(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    hsds = commands.add_parser(
        "hsds",
        help="import or export Open Referral HSDS 3.0 data",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = hsds.add_subparsers(dest="action", required=True, metavar="ACTION")
    hsds.set_defaults(handler=cmd_hsds)
    imports = actions.add_parser(
        "import",
        help="upsert HSDS JSON or a CSV datapackage into the directory",
        epilog="examples:\n  eo hsds import export/ --dry-run\n"
        "  eo hsds import services.json --report rejected.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imports.add_argument("path", type=Path, metavar="PATH", help=".json file or datapackage")
    imports.add_argument("--dry-run", action="store_true", help="check everything, keep nothing")
    imports.add_argument("--report", type=Path, metavar="FILE", help="write the row report (CSV)")
    exports = actions.add_parser("export", help="write the directory as an HSDS datapackage")
    exports.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder (created)")


def cmd_hsds(args: argparse.Namespace) -> int:
    try:
        with database(InfraSettings.from_env()) as url:
            return asyncio.run(_run(args, url))
    except HsdsInputError as exc:
        print(f"eo hsds: {exc}", file=sys.stderr)
        return 2


@contextmanager
def _bar(console: Console, label: str) -> Iterator[Progress]:
    with Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), console=console, transient=False
    ) as progress:
        yield progress


async def _run(args: argparse.Namespace, url: str) -> int:
    console = Console(stderr=True)
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn, "directory", MIGRATIONS)
        if args.action == "export":
            with _bar(console, f"export to {args.out_dir}") as progress:
                task = progress.add_task("export", total=1)
                counts = await export_directory(conn, args.out_dir)
                progress.advance(task)
            print(", ".join(f"{table}: {n}" for table, n in counts.items()))
            return 0
        tables, notes = load(args.path)
        with _bar(console, "dry run" if args.dry_run else "import") as progress:
            task = progress.add_task("write", total=None)

            def advance(_: str, done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            plan = await import_tables(
                conn, tables, dry_run=args.dry_run, notes=notes, progress=advance
            )
    finally:
        await conn.close()
    return _summary(plan, args)


def _summary(plan: Plan, args: argparse.Namespace) -> int:
    counts = plan.counts()
    verb = "would upsert" if args.dry_run else "upserted"
    print(
        f"{verb} {counts['providers']} providers, {counts['sites']} sites, "
        f"{counts['taxonomy_terms']} taxonomy terms, {counts['catchments']} catchments; "
        f"{counts['rejected']} rows rejected, {counts['dropped_fields']} fields dropped, "
        f"{counts['skipped']} rows skipped"
    )
    if args.report is not None:
        args.report.write_text(report_csv(plan.issues))
        print(f"report: {args.report}")
    else:
        for issue in plan.issues:
            if issue.action == "rejected":
                print(f"  {issue.table} row {issue.row} ({issue.id}): {issue.reason}")
    return 0
