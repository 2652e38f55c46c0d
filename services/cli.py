"""``eo``: the project's command line (run everything, migrate, seed, resolve a place).

It is the composition root of the commands: the embedded NATS gets users for the seed's
providers here, and for the directory's later ones while ``eo run`` runs
(services/nats_users.py); the command groups that live with what they act on are added to its
parser (``eo referral``: services/router/cli.py; ``eo token``: services/directory/tokens_cli.py;
``eo hsds``: services/directory/hsds/cli.py).
"""

import argparse
import asyncio
import contextlib
import secrets
import sys
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
import structlog
import uvloop
from nats.aio.client import Client as NatsClient

from services import client
from services.access.errors import AccessError
from services.access.principal import Role
from services.access.tokens import TokenStore
from services.client import ClientError
from services.demo import DEMO_SYSTEM, PERSON_PROVIDER, run_demo
from services.directory.app import create_app
from services.directory.hsds.cli import add_hsds_commands
from services.directory.schema import MIGRATIONS as DIRECTORY_MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.directory.settings import DirectorySettings
from services.directory.store import DirectoryStore
from services.directory.tokens_cli import add_token_commands
from services.geo import UnresolvableLocation, default_gazetteer
from services.infra.embedded import Servers, ServerStartError, database_only, running_servers
from services.infra.logs import configure_logging
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import (
    DEPLOY_OW_SYSTEMS,
    accounts_template,
    all_ow_systems,
    default_users,
    strip_login,
    write_accounts,
)
from services.infra.serving import Served, serve_all
from services.infra.settings import InfraSettings
from services.nats_users import keep_provider_users
from services.router.app import (
    MIGRATIONS as ROUTER_MIGRATIONS,
    DirectorySchemaMissing,
    check_directory_schema,
    create_app as create_router_app,
)
from services.router.cli import add_referral_commands
from services.router.settings import RouterSettings

log = structlog.get_logger("eo")

CONFIGURATION = """\
configuration (environment variables):
  DATABASE_URL             use this PostgreSQL instead of starting an embedded one
  NATS_URL                 use this NATS (with JetStream) instead of starting an embedded one
                           (nats://router:<password>@host:port: the router's login)
  NATS_CREDENTIALS_DIR     folder of the NATS users' logins (<user>.json) for that server, used
                           by eo referral and the demo (embedded: EO_STATE_DIR/credentials)
  EO_STATE_DIR             where embedded servers keep their data, and eo run its admin and
                           sample tokens (default .state)
  EO_PG_PORT, EO_NATS_PORT loopback ports of the embedded servers (default 55432, 44222)
  EO_LOG_LEVEL             debug, info (default), warning, error
  EO_OW_SYSTEMS            more OW systems that get a NATS user (comma-separated), besides
                           ow-lanark, eo-cli and eo-demo; with eo nats-config: besides ow-lanark
  EO_NATS_USER_SYNC_S      how often the embedded NATS gives the directory's new providers
                           their users (default 2 s)
  DIRECTORY_HOST, DIRECTORY_PORT   where the directory listens (default 127.0.0.1:8000)
  DIRECTORY_ADMIN_TOKEN    bootstrap admin token of the directory API (default: generated
                           into EO_STATE_DIR/admin-token; others: eo token)
  DIRECTORY_GEOCODER       offline (default, bundled gazetteer) or nominatim (needs network)
  ROUTER_HOST, ROUTER_PORT         where the router's HTTP API listens (default 127.0.0.1:8001)
  ROUTER_ADMIN_TOKEN       bootstrap admin token of the router API (default: the directory's,
                           EO_STATE_DIR/admin-token; others: eo token)
  ROUTER_OFFER_BUSINESS_DAYS  Ontario business days a provider has to answer an offer (2;
                           weekends and Ontario's public holidays do not count)
  ROUTER_OFFER_TIMEOUT_S   seconds instead of business days, when set (unset by default)
  ROUTER_SWEEP_INTERVAL_S  how often expired offers and unsent events are looked for (1)
  ROUTER_BATCH_SIZE        messages fetched from JetStream at once (100)
  ROUTER_CONCURRENCY       referrals handled at once, each on its own connection (8)
  ROUTER_DB_COMMAND_TIMEOUT_S, ROUTER_MESSAGE_TIMEOUT_S   longest SQL statement (30) and
                           longest handling of one message (60) before it is retried
  ROUTER_MAX_DELIVER       deliveries of one message before it is dead-lettered (200)
  ROUTER_BACKOFF_S         redelivery delays, comma-separated (2,5,10,30,60)
  ROUTER_DUPLICATE_WINDOW_S  JetStream de-duplication window of the stream (300)
  ROUTER_STREAM_REPLICAS   copies of the REFERRALS stream: 1 (default, one nats-server), 3 on a
                           3-node cluster (NATS_URL then lists the nodes, comma-separated)
  ROUTER_URL               the router `eo referral show/respond` asks (http://127.0.0.1:8001)
  ROUTER_TOKEN             the token they send it (default: EO_STATE_DIR/admin-token, if there)
"""


def admin_token(configured: str | None, state_dir: Path) -> str:
    """The configured admin token, or one generated once and kept in the state folder."""
    if configured:
        return configured
    path = state_dir / "admin-token"
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class SampleLogin:
    """A token ``eo run`` keeps in the state folder for a person to sign in to a page with."""

    #: The router's page it signs in to.
    page: str
    #: Its file in the state folder.
    file: str
    #: Its name in the token table (``eo token list``).
    name: str
    role: Role
    provider_id: str | None = None
    system: str | None = None

    @property
    def holder(self) -> str:
        return f"provider {self.provider_id}" if self.provider_id else f"OW system {self.system}"


#: The provider inbox as the demo's sample provider, the tracker as the demo's OW system.
SAMPLE_LOGINS = (
    SampleLogin(
        "inbox",
        "sample-provider-token",
        "make run: sample provider inbox",
        "provider",
        provider_id=PERSON_PROVIDER,
    ),
    SampleLogin(
        "tracker",
        "sample-ow-token",
        f"make run: sample OW tracker ({DEMO_SYSTEM})",
        "ow",
        system=DEMO_SYSTEM,
    ),
)


def _kept(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _keep(path: Path, text: str) -> None:
    """Keep ``text`` in ``path``, readable by its owner only (as the admin token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)  # also when an older file was there
    path.write_text(text)


async def kept_token(tokens: TokenStore, login: SampleLogin, state_dir: Path) -> str:
    """The token kept in the state folder for ``login`` while it is active; else a new one,
    issued and kept (a new database, or the token was revoked)."""
    path = state_dir / login.file
    if (text := _kept(path)) is not None:
        found = await tokens.find_active(text)
        owner = (login.role, login.provider_id, login.system)
        if found is not None and (found.role, found.provider_id, found.system) == owner:
            return text
    _, text = await tokens.issue(
        role=login.role, name=login.name, provider_id=login.provider_id, system=login.system
    )
    _keep(path, text)
    return text


async def sample_tokens(database_url: str, state_dir: Path, *, seed: bool) -> dict[str, str]:
    """The text to show for each sample login, by page: its token, or why there is none.

    With ``seed``, the seed is loaded first (idempotently, as the directory does when it
    starts), so that the sample provider exists before its token is issued.
    """
    conn = await asyncpg.connect(database_url)
    try:
        if seed:
            await load_seed(conn)
        tokens = TokenStore(conn)
        shown: dict[str, str] = {}
        for login in SAMPLE_LOGINS:
            try:
                shown[login.page] = await kept_token(tokens, login, state_dir)
            except (AccessError, asyncpg.PostgresError) as exc:
                shown[login.page] = f"(none: {exc})"
        return shown
    finally:
        await conn.close()


def banner(
    servers: Servers,
    directory: DirectorySettings,
    router: RouterSettings,
    state_dir: Path,
    tokens: dict[str, str],
) -> str:
    base = f"http://{directory.host}:{directory.port}"
    routing = f"http://{router.host}:{router.port}"
    inbox, tracker = SAMPLE_LOGINS
    embedded = ", ".join(servers.started) or "none (using DATABASE_URL / NATS_URL)"
    users = (
        f"users' logins in {servers.nats_credentials_dir}"
        if servers.nats_credentials_dir
        else "logins as NATS_URL gives"
    )
    return f"""
  EO referrals is up.  Ctrl-C stops everything this command started.

  office finder   {base}/   (staff look up local offices; English and French)
  provider inbox  {routing}/inbox     sign in as {inbox.holder}:
                  {tokens[inbox.page]}
  OW tracker      {routing}/tracker   sign in as {tracker.holder}:
                  {tokens[tracker.page]}
                  (paste the token into the page's sign-in; both are kept in the state
                  folder, {inbox.file} and {tracker.file}, and reused until revoked)
  directory API   {base}/api/v1/sites/nearest?community=Almonte&service=resume_writing
  OpenAPI         {base}/schema   (health {base}/health, ready {base}/ready)
  router API      {routing}/api/v1/referrals/<referral_id>   (OpenAPI {routing}/schema)
                  (both APIs: Authorization: Bearer <admin token>, or one of eo token issue)
  watch events    .venv/bin/eo referral watch      send one: .venv/bin/eo referral send --help
  PostgreSQL      {servers.database_url}
  NATS            {strip_login(servers.nats_url)}   (JetStream enabled)
  NATS users      router, operator, OW systems, one per provider; {users}
  embedded        {embedded}; state in {state_dir.resolve()}
  admin token     {state_dir.resolve() / "admin-token"} (or DIRECTORY_ADMIN_TOKEN,
                  ROUTER_ADMIN_TOKEN)
"""


async def _wait_ready(*urls: str) -> None:
    for url in urls:
        while True:
            with contextlib.suppress(ClientError):
                await asyncio.to_thread(client.get_json, url)
                break
            await asyncio.sleep(0.2)


async def _demo(
    directory: DirectorySettings,
    router: RouterSettings,
    servers: Servers,
    sign_in: str,
    ow_token: str | None,
) -> None:
    router_base = f"http://{router.host}:{router.port}"

    async def connect(user: str) -> NatsClient:
        """The demo's parties connect as their own NATS users."""
        return await client.connect(servers.nats_connect_options(user), name=f"eo-demo ({user})")

    try:
        await _wait_ready(f"http://{directory.host}:{directory.port}/ready", f"{router_base}/ready")
        await run_demo(
            connect,
            router_base,
            providers=seed_provider_ids(),
            directory_url=f"http://{directory.host}:{directory.port}",
            sign_in=sign_in,
            ow_token=ow_token,
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the demo must never take the services down
        log.exception("demo.failed", error=repr(exc))


def _nats_user_sync(servers: Servers, infra: InfraSettings) -> list[Coroutine[None, None, None]]:
    """The loop giving the directory's new providers users on the embedded NATS, when this
    process started it; none with NATS_URL (the operator's: eo nats-config --from-database)."""
    if servers.embedded_nats is None:
        return []
    every_s = infra.nats_user_sync_s
    return [keep_provider_users(servers.embedded_nats, servers.database_url, every_s=every_s)]


def cmd_run(args: argparse.Namespace) -> int:
    infra = InfraSettings.from_env()
    with running_servers(infra, provider_ids=seed_provider_ids()) as servers:
        directory = DirectorySettings.from_env(servers.database_url)
        token = admin_token(directory.admin_token, infra.state_dir)
        directory = msgspec.structs.replace(directory, admin_token=token)
        router = RouterSettings.from_env(servers.database_url, servers.nats_url)
        # One bootstrap admin for both APIs, unless ROUTER_ADMIN_TOKEN gives the router its own.
        router = msgspec.structs.replace(router, admin_token=router.admin_token or token)
        # Both schemas before either service starts: the router refuses to start without the
        # directory's, and the two start at the same moment.
        migrating = [
            service
            for service, settings in (("directory", directory), ("router", router))
            if settings.apply_migrations
        ]
        asyncio.run(_migrate(servers.database_url, migrating))
        tokens = asyncio.run(
            sample_tokens(servers.database_url, infra.state_dir, seed=directory.load_seed)
        )
        print(banner(servers, directory, router, infra.state_dir, tokens), flush=True)
        apps = [
            Served("directory", create_app(directory), directory.host, directory.port),
            Served("router", create_router_app(router), router.host, router.port),
        ]
        files = " and ".join(login.file for login in SAMPLE_LOGINS)
        sign_in = f"Sign in with the tokens printed at the start ({files} in the state folder)."
        ow_token = tokens["tracker"] if tokens["tracker"].startswith("tok_") else None
        demo = [] if args.no_demo else [_demo(directory, router, servers, sign_in, ow_token)]
        started = uvloop.run(serve_all(apps, also=[*_nats_user_sync(servers, infra), *demo]))
    return 0 if started else 1


def cmd_directory(_: argparse.Namespace) -> int:
    """Only the directory: it needs PostgreSQL (DATABASE_URL, or the embedded one), not NATS."""
    infra = InfraSettings.from_env()
    with database_only(infra) as database_url:
        directory = DirectorySettings.from_env(database_url)
        token = admin_token(directory.admin_token, infra.state_dir)
        directory = msgspec.structs.replace(directory, admin_token=token)
        print(f"directory: http://{directory.host}:{directory.port}", flush=True)
        apps = [Served("directory", create_app(directory), directory.host, directory.port)]
        started = uvloop.run(serve_all(apps))
    return 0 if started else 1


async def _check_directory_schema(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await check_directory_schema(conn)
    finally:
        await conn.close()


def cmd_router(_: argparse.Namespace) -> int:
    infra = InfraSettings.from_env()
    with running_servers(infra, provider_ids=seed_provider_ids()) as servers:
        router = RouterSettings.from_env(servers.database_url, servers.nats_url)
        router = msgspec.structs.replace(
            router, admin_token=admin_token(router.admin_token, infra.state_dir)
        )
        where = strip_login(router.nats_url)
        asyncio.run(_check_directory_schema(router.database_url))
        print(f"router: http://{router.host}:{router.port}  NATS {where}", flush=True)
        apps = [Served("router", create_router_app(router), router.host, router.port)]
        started = uvloop.run(serve_all(apps, also=_nats_user_sync(servers, infra)))
    return 0 if started else 1


#: Each service's migrations, in the order they apply: the router's candidates query reads the
#: directory's tables, and each service applies only its own at start.
SCHEMAS = (("directory", DIRECTORY_MIGRATIONS), ("router", ROUTER_MIGRATIONS))


async def _migrate(database_url: str, services: Sequence[str]) -> dict[str, list[str]]:
    """Apply the migrations of ``services``, in ``SCHEMAS`` order; the names applied now."""
    conn = await asyncpg.connect(database_url)
    try:
        return {
            service: await apply_migrations(conn, service, folder)
            for service, folder in SCHEMAS
            if service in services
        }
    finally:
        await conn.close()


async def _migrate_and_seed(database_url: str, seed: bool) -> None:
    applied = await _migrate(database_url, [service for service, _ in SCHEMAS])
    for service, names in applied.items():
        print(f"{service} migrations applied now: {names or 'none (up to date)'}")
    conn = await asyncpg.connect(database_url)
    try:
        if seed:
            added = await load_seed(conn)
            print(f"seed loaded: {added['providers']} new providers, {added['sites']} new sites")
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    with database_only(InfraSettings.from_env()) as database_url:
        asyncio.run(_migrate_and_seed(database_url, seed=args.seed))
    return 0


async def _directory_provider_ids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        return await DirectoryStore(conn).provider_ids()
    finally:
        await conn.close()


def _nats_config_providers(args: argparse.Namespace, infra: InfraSettings) -> list[str]:
    """--provider, and with --from-database every provider of the directory; else the seed's."""
    if not args.from_database:
        return list(args.provider or seed_provider_ids())
    with database_only(infra) as database_url:
        in_directory = asyncio.run(_directory_provider_ids(database_url))
    return list(dict.fromkeys([*(args.provider or ()), *in_directory]))


def cmd_nats_config(args: argparse.Namespace) -> int:
    """The NATS users of a deployment: a template, or accounts.conf with generated passwords."""
    infra = InfraSettings.from_env()
    try:
        provider_ids = _nats_config_providers(args, infra)
    except asyncpg.UndefinedTableError:
        print("eo: the database has no directory yet (eo migrate)", file=sys.stderr)
        return 1
    systems = args.ow_system or all_ow_systems(infra.ow_systems, builtin=DEPLOY_OW_SYSTEMS)
    try:
        users = default_users(ow_systems=systems, provider_ids=provider_ids)
    except ValueError as exc:
        print(f"eo: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        print(accounts_template(users), end="")
        return 0
    path = write_accounts(args.out, users)
    print(f"wrote {path} (for nats-server: include it from nats-server.conf)")
    print(f"logins (<user>.json, one per party; never commit them): {args.out / 'credentials'}")
    print("users: " + ", ".join(user.name for user in users))
    return 0


def cmd_geocode(args: argparse.Namespace) -> int:
    gazetteer = default_gazetteer()
    try:
        if args.postal_code:
            point = gazetteer.resolve_postal_code(args.postal_code)
        else:
            point = gazetteer.resolve_community(args.community)
    except UnresolvableLocation as exc:
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
        "run",
        help="start the servers, the directory and the router, and run the demo, until Ctrl-C "
        "(what `make run` does)",
    )
    run.add_argument("--no-demo", action="store_true", help="do not send the sample referrals")
    run.set_defaults(handler=cmd_run)

    router = commands.add_parser(
        "router", help="run only the router (several may share one stream and database)"
    )
    router.set_defaults(handler=cmd_router)

    directory = commands.add_parser(
        "directory", help="run only the directory (PostgreSQL only; several may share it)"
    )
    directory.set_defaults(handler=cmd_directory)

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

    nats_config = commands.add_parser(
        "nats-config",
        help="NATS users and permissions for a deployment (deploy/nats/README.md)",
        description="Without --out: print the accounts template (passwords from NATS_PASSWORD_"
        "<USER> environment variables), as in deploy/nats/accounts.template.conf. With --out "
        "DIR: write DIR/accounts.conf with generated passwords and DIR/credentials/<user>.json "
        "(reused when present).",
    )
    nats_config.add_argument("--out", type=Path, metavar="DIR")
    nats_config.add_argument(
        "--ow-system", action="append", metavar="NAME", help="an OW system (repeatable; "
        "default ow-lanark and those of EO_OW_SYSTEMS)",
    )  # fmt: skip
    nats_config.add_argument(
        "--provider", action="append", metavar="PROVIDER_ID",
        help="a provider (repeatable; default the seed's providers)",
    )  # fmt: skip
    nats_config.add_argument(
        "--from-database", action="store_true",
        help="a user for every provider in the directory of DATABASE_URL (or the embedded "
        "PostgreSQL), besides --provider; regenerate accounts.conf after providers are added",
    )  # fmt: skip
    nats_config.set_defaults(handler=cmd_nats_config)

    add_referral_commands(commands)
    add_token_commands(commands)
    add_hsds_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        configure_logging(InfraSettings.from_env().log_level)
        code: int = args.handler(args)
    except msgspec.ValidationError as exc:
        print(f"eo: invalid configuration: {exc} (see eo --help)", file=sys.stderr)
        return 2
    except (ServerStartError, DirectorySchemaMissing) as exc:
        print(f"eo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
