"""``eo``: the project's command line (run everything, migrate, seed, resolve a place)."""

import argparse
import asyncio
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import msgspec
import uvicorn

from services.directory.app import MIGRATIONS as DIRECTORY_MIGRATIONS, create_app
from services.directory.errors import DirectoryError
from services.directory.geocode import default_gazetteer
from services.directory.seed import load_seed
from services.directory.settings import DirectorySettings
from services.infra.embedded import Servers, ServerStartError, running_servers
from services.infra.logs import configure_logging
from services.infra.migrations import apply_migrations
from services.infra.settings import InfraSettings

CONFIGURATION = """\
configuration (environment variables):
  DATABASE_URL             use this PostgreSQL instead of starting an embedded one
  NATS_URL                 use this NATS (with JetStream) instead of starting an embedded one
  EO_STATE_DIR             where embedded servers keep their data (default .state)
  EO_PG_PORT, EO_NATS_PORT loopback ports of the embedded servers (default 55432, 44222)
  EO_LOG_LEVEL             debug, info (default), warning, error
  DIRECTORY_HOST, DIRECTORY_PORT   where the directory listens (default 127.0.0.1:8000)
  DIRECTORY_ADMIN_TOKEN    bearer token for writes (default: generated into EO_STATE_DIR)
  DIRECTORY_GEOCODER       offline (default, bundled gazetteer) or nominatim (needs network)
"""


def admin_token(settings: DirectorySettings, state_dir: Path) -> str:
    """The configured admin token, or one generated once and kept in the state folder."""
    if settings.admin_token:
        return settings.admin_token
    path = state_dir / "admin-token"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def banner(servers: Servers, directory: DirectorySettings, state_dir: Path) -> str:
    base = f"http://{directory.host}:{directory.port}"
    embedded = ", ".join(servers.started) or "none (using DATABASE_URL / NATS_URL)"
    return f"""
  EO referrals is up.  Ctrl-C stops everything this command started.

  directory API   {base}/api/v1/sites/nearest?community=Almonte&service=resume_writing
  OpenAPI         {base}/schema   (health {base}/health, ready {base}/ready)
  PostgreSQL      {servers.database_url}
  NATS            {servers.nats_url}   (JetStream enabled)
  embedded        {embedded}; state in {state_dir.resolve()}
  admin token     {state_dir.resolve() / "admin-token"} (or DIRECTORY_ADMIN_TOKEN)
"""


async def serve_directory(settings: DirectorySettings) -> bool:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http="httptools",
        lifespan="on",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    await server.serve()
    return server.started


def cmd_run(_: argparse.Namespace) -> int:
    infra = InfraSettings.from_env()
    with running_servers(infra) as servers:
        directory = DirectorySettings.from_env(servers.database_url)
        token = admin_token(directory, infra.state_dir)
        directory = msgspec.structs.replace(directory, admin_token=token)
        print(banner(servers, directory, infra.state_dir), flush=True)
        started = asyncio.run(serve_directory(directory))
    return 0 if started else 1


async def _migrate_and_seed(database_url: str, seed: bool) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        applied = await apply_migrations(conn, "directory", DIRECTORY_MIGRATIONS)
        print(f"directory migrations applied now: {applied or 'none (up to date)'}")
        if seed:
            added = await load_seed(conn)
            print(f"seed loaded: {added['providers']} new providers, {added['sites']} new sites")
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    with running_servers(InfraSettings.from_env()) as servers:
        asyncio.run(_migrate_and_seed(servers.database_url, seed=args.seed))
    return 0


def cmd_geocode(args: argparse.Namespace) -> int:
    gazetteer = default_gazetteer()
    try:
        if args.postal_code:
            point = gazetteer.resolve_postal_code(args.postal_code)
        else:
            point = gazetteer.resolve_community(args.community)
    except DirectoryError as exc:
        print(f"error ({exc.field}): {exc.message}", file=sys.stderr)
        return 2
    print(
        f"{point.lat:.5f},{point.lon:.5f}  precision={point.precision}  from {point.resolved_from}"
    )
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="eo",
        description="Route Ontario Works clients to the nearest suitable Employment Ontario "
        "provider. Without DATABASE_URL / NATS_URL, commands start embedded servers.",
        epilog=CONFIGURATION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="start the servers and the directory until Ctrl-C (what `make run` does)"
    )
    run.set_defaults(handler=cmd_run)

    migrate = commands.add_parser("migrate", help="apply database migrations, then stop")
    migrate.add_argument("--seed", action="store_true", help="also load the seed data")
    migrate.set_defaults(handler=cmd_migrate)

    geocode = commands.add_parser(
        "geocode", help="resolve a postal code or community offline, as the router would"
    )
    where = geocode.add_mutually_exclusive_group(required=True)
    where.add_argument("--postal-code", help="e.g. 'K7C 3P2'")
    where.add_argument("--community", help="e.g. Almonte")
    geocode.set_defaults(handler=cmd_geocode)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        configure_logging(InfraSettings.from_env().log_level)
        code: int = args.handler(args)
    except msgspec.ValidationError as exc:
        print(f"eo: invalid configuration: {exc} (see eo --help)", file=sys.stderr)
        return 2
    except ServerStartError as exc:
        print(f"eo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
