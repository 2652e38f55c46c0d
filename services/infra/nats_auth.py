"""NATS users and what each may do (DESIGN.md section 7), rendered as nats-server configuration.

One account, ``EO``, with JetStream, and these users:

- ``router``: publish ``referral.>``, ``$JS.API.>`` (the stream and its consumers) and
  ``$JS.ACK.>``; subscribe ``referral.>`` and ``_INBOX.>``;
- ``operator``: everything in the account (tests, ``eo referral watch``, operations);
- one per OW system (``ow-lanark``): publish ``referral.requested`` and ``referral.cancel``;
  subscribe ``referral.status``;
- one per provider (``provider-<id>``): subscribe ``referral.offered.<id>``; publish
  ``referral.response.<id>``; of JetStream only its own consumer ``provider-<id>`` (consumer
  info, fetch, ack); no stream or consumer management, no other consumer.

Every user but ``router`` and ``operator`` has its own inbox prefix, ``_INBOX_<user>`` (nats-py's
``inbox_prefix``), and may subscribe only there: JetStream's replies (publish acks, fetched
messages) reach their requester, and no one can read another user's replies.

Passwords are generated (``secrets.token_urlsafe``) into a credentials folder, one JSON file per
user (``<user>.json``: ``user``, ``password``, ``inbox_prefix``; mode 0600, folder 0700),
created once and reused, so a restart keeps every party's login. Nothing here is committed:
``deploy/nats/`` holds a template that reads the passwords from environment variables.
"""

import json
import os
import re
import secrets
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec

from contracts.subjects import (
    CANCEL,
    REQUESTED,
    STATUS,
    STREAM,
    STREAM_SUBJECTS,
    offered_subject,
    provider_durable,
    response_subject,
)
from services.infra.settings import InfraSettings

__all__ = [
    "ACCOUNT",
    "CREDENTIALS_FOLDER",
    "DEFAULT_OW_SYSTEMS",
    "DEPLOY_OW_SYSTEMS",
    "OPERATOR_USER",
    "ROUTER_USER",
    "MissingCredentials",
    "NatsLogin",
    "NatsUser",
    "accounts_config",
    "accounts_template",
    "client_connect_options",
    "default_users",
    "ensure_credentials",
    "has_login",
    "inbox_prefix",
    "load_login",
    "login_options",
    "operator_user",
    "ow_user",
    "password_variable",
    "provider_user",
    "provider_user_name",
    "redact",
    "router_user",
    "seed_provider_ids",
    "servers_option",
    "split_urls",
    "strip_login",
    "url_login",
    "with_login",
    "write_accounts",
]

#: The account every user of the referral flow belongs to (JetStream enabled).
ACCOUNT = "EO"
ROUTER_USER = "router"
#: Full access within the account: tests, `eo referral watch`, operations.
OPERATOR_USER = "operator"
#: OW systems that get a user by default: the example system, and the `eo referral` commands'
#: and the `make run` demo's ``source.system``.
DEFAULT_OW_SYSTEMS: tuple[str, ...] = ("ow-lanark", "eo-cli", "eo-demo")
#: Provider users are ``provider-<provider_id>``, like their consumers.
PROVIDER_USER_PREFIX = "provider-"
#: The credentials folder under the state folder (EO_STATE_DIR) of the embedded server.
CREDENTIALS_FOLDER = "credentials"
#: nats-py's default inbox prefix, kept by the trusted users.
DEFAULT_INBOX = "_INBOX"

Role = Literal["router", "operator", "ow", "provider"]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_RESERVED = (ROUTER_USER, OPERATOR_USER)


class MissingCredentials(LookupError):
    """No credentials file for a user: say which, where, and which users exist there."""


class NatsUser(msgspec.Struct, frozen=True, kw_only=True):
    """A user of the ``EO`` account and the subjects it may use (``None``: no restriction)."""

    name: str
    role: Role
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None
    #: For a provider's user: the provider it acts for.
    provider_id: str | None = None

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)


class NatsLogin(msgspec.Struct, frozen=True, kw_only=True):
    """What a client needs to connect as one user (the content of ``<user>.json``)."""

    user: str
    password: str
    inbox_prefix: str

    def connect_options(self) -> dict[str, str]:
        """``nats.connect()`` keyword arguments (they win over a login in the URL)."""
        return {"user": self.user, "password": self.password, "inbox_prefix": self.inbox_prefix}

    def __repr__(self) -> str:  # never print the password
        return f"NatsLogin(user={self.user!r}, inbox_prefix={self.inbox_prefix!r})"


def inbox_prefix(user: str) -> str:
    return DEFAULT_INBOX if user in _RESERVED else f"{DEFAULT_INBOX}_{user}"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a NATS user name (a slug such as 'ow-lanark')")
    return name


def router_user() -> NatsUser:
    return NatsUser(
        name=ROUTER_USER,
        role="router",
        # The stream and its consumers (create, fetch), acks, and every referral subject.
        publish=(*STREAM_SUBJECTS, "$JS.API.>", "$JS.ACK.>"),
        subscribe=(*STREAM_SUBJECTS, f"{DEFAULT_INBOX}.>"),
    )


def operator_user() -> NatsUser:
    return NatsUser(name=OPERATOR_USER, role="operator")


def ow_user(system: str) -> NatsUser:
    """An OW system: sends requests and cancellations, reads status events."""
    name = _check_name(system)
    if name in _RESERVED or name.startswith(PROVIDER_USER_PREFIX):
        raise ValueError(f"{name!r} cannot name an OW system (reserved for another user)")
    return NatsUser(
        name=name,
        role="ow",
        publish=(REQUESTED, CANCEL),
        subscribe=(STATUS, f"{inbox_prefix(name)}.>"),
    )


def provider_user_name(provider_id: str) -> str:
    return provider_durable(provider_id)  # "provider-<id>", the same name as its consumer


def provider_user(provider_id: str) -> NatsUser:
    """A provider: its own offers (core and its consumer), its own responses, nothing else."""
    name = provider_user_name(provider_id)
    durable = provider_durable(provider_id)
    return NatsUser(
        name=name,
        role="provider",
        provider_id=provider_id,
        publish=(
            response_subject(provider_id),
            f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}",
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
            f"$JS.ACK.{STREAM}.{durable}.>",
        ),
        subscribe=(offered_subject(provider_id), f"{inbox_prefix(name)}.>"),
    )


def seed_provider_ids() -> list[str]:
    """The providers of the directory's seed data (the embedded default gives each a user)."""
    from services.directory.seed import read_seed  # the directory owns the seed file

    return [provider.id for provider in read_seed().providers]


def default_users(
    ow_systems: Sequence[str] = DEFAULT_OW_SYSTEMS, provider_ids: Sequence[str] | None = None
) -> list[NatsUser]:
    """router, operator, one user per OW system and one per provider (default: the seed's)."""
    providers = seed_provider_ids() if provider_ids is None else provider_ids
    users = [
        router_user(),
        operator_user(),
        *(ow_user(system) for system in ow_systems),
        *(provider_user(provider_id) for provider_id in providers),
    ]
    names = [user.name for user in users]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"NATS user names given twice: {', '.join(duplicates)}")
    return users


# -- nats-server configuration ------------------------------------------------------------------


def password_variable(user: str) -> str:
    """The variable a template reads ``user``'s password from (an environment variable)."""
    return "NATS_PASSWORD_" + re.sub(r"[^A-Z0-9]", "_", user.upper())


def _quoted(value: str) -> str:
    return json.dumps(value)  # ASCII names and subjects: a valid nats-server quoted string


def _allow(direction: str, subjects: Sequence[str]) -> list[str]:
    pad = " " * 10
    return [
        f"{pad}{direction}: {{ allow: [",
        *(f"{pad}  {_quoted(subject)}," for subject in subjects),
        f"{pad}] }}",
    ]


_SUMMARY: dict[Role, str] = {
    "router": "every referral subject, the JetStream API (stream, consumers), acks",
    "operator": "operations and tests: everything in the account",
    "ow": "an OW system: sends requests and cancellations, reads status events",
    "provider": "a provider: its own offers, its own responses, its own consumer only",
}


def accounts_config(users: Sequence[NatsUser], passwords: Mapping[str, str] | None) -> str:
    """The ``accounts`` block of nats-server's configuration for ``users``.

    With ``passwords`` None it is a template: each password is the variable
    ``$NATS_PASSWORD_<USER>``, which nats-server resolves from its environment.
    """
    lines = ["accounts {", f"  {ACCOUNT} {{", "    jetstream: enabled", "    users: ["]
    for user in users:
        if passwords is None:
            password = "$" + password_variable(user.name)
        else:
            password = _quoted(passwords[user.name])
        lines += [
            f"      # {user.name}: {_SUMMARY[user.role]}",
            "      {",
            f"        user: {_quoted(user.name)}",
            f"        password: {password}",
        ]
        if user.publish is not None or user.subscribe is not None:
            lines.append("        permissions: {")
            if user.publish is not None:
                lines += _allow("publish", user.publish)
            if user.subscribe is not None:
                lines += _allow("subscribe", user.subscribe)
            lines.append("        }")
        lines.append("      }")
    lines += ["    ]", "  }", "}"]
    return "\n".join(lines) + "\n"


#: The users of the deploy example (deploy/nats/accounts.template.conf): no CLI or demo users.
DEPLOY_OW_SYSTEMS: tuple[str, ...] = ("ow-lanark",)

TEMPLATE_HEADER = """\
# Users and permissions of the EO referral flow (DESIGN.md section 7), for nats-server.conf's
# `include "accounts.conf"`. Written by `eo nats-config` (a test compares the two): edit the
# generator, not this file. Each password is read from the environment variable
# NATS_PASSWORD_<USER> of the nats-server process; `eo nats-config --out DIR` writes an
# accounts.conf with generated passwords instead. Other OW systems and providers:
# `eo nats-config --ow-system <name> ... --provider <id> ...`.
"""


def accounts_template(users: Sequence[NatsUser]) -> str:
    """The committed template: ``accounts_config`` with password variables, and its header."""
    return TEMPLATE_HEADER + accounts_config(users, None)


def write_accounts(folder: Path, users: Sequence[NatsUser]) -> Path:
    """``<folder>/accounts.conf`` with every user's password (generated into
    ``<folder>/credentials`` the first time, reused afterwards); files 0600. Its path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    logins = ensure_credentials(folder / CREDENTIALS_FOLDER, users)
    passwords = {name: login.password for name, login in logins.items()}
    path = folder / "accounts.conf"
    _write_private(path, (GENERATED_HEADER + accounts_config(users, passwords)).encode())
    return path


GENERATED_HEADER = """\
# Users and permissions of the EO referral flow, with their passwords: written by
# `eo nats-config --out`, readable by its owner only. Never commit it.
"""


# -- credentials files ------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` with mode 0600 from its first byte (a temporary file, then a rename)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _read_login(path: Path, user: str) -> NatsLogin | None:
    try:
        login = msgspec.json.decode(path.read_bytes(), type=NatsLogin)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    return login if login.user == user and login.password else None


def ensure_credentials(folder: Path, users: Iterable[NatsUser]) -> dict[str, NatsLogin]:
    """Each user's login from ``folder``, generating those missing (files 0600, folder 0700)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    logins: dict[str, NatsLogin] = {}
    for user in users:
        path = folder / f"{user.name}.json"
        login = _read_login(path, user.name)
        if login is None:
            login = NatsLogin(
                user=user.name, password=secrets.token_urlsafe(24), inbox_prefix=user.inbox_prefix
            )
            _write_private(path, msgspec.json.format(msgspec.json.encode(login)) + b"\n")
        else:
            path.chmod(0o600)
        logins[user.name] = login
    return logins


def load_login(folder: Path, user: str) -> NatsLogin:
    """``user``'s login from ``folder``; MissingCredentials says what is there instead."""
    login = _read_login(folder / f"{user}.json", user)
    if login is None:
        known = sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []
        there = f"users there: {', '.join(known)}" if known else "no credentials there"
        raise MissingCredentials(f"no NATS credentials for user {user!r} in {folder} ({there})")
    return login


# -- URLs ---------------------------------------------------------------------------------------


def split_urls(url: str) -> list[str]:
    """The servers of ``url``: one URL, or a comma-separated list of a cluster's nodes
    (``nats://router:<password>@n1:4222,nats://n2:4222,nats://n3:4222``). A node given without
    a login gets the first login of the list, so a cluster's URL need carry the password once.
    """
    parts = [part.strip() for part in url.split(",") if part.strip()]
    login = next((p for p in parts if "@" in urllib.parse.urlsplit(p).netloc), None)
    if login is None:
        return parts
    userinfo = urllib.parse.urlsplit(login).netloc.rpartition("@")[0] + "@"
    return [
        p if "@" in urllib.parse.urlsplit(p).netloc else _replace_one(p, userinfo) for p in parts
    ]


def servers_option(url: str) -> str | list[str]:
    """``nats.connect(servers=...)`` for ``url``: one URL as is, a cluster's list as a list
    (nats-py then fails over between the nodes)."""
    parts = split_urls(url)
    return parts[0] if len(parts) == 1 else parts


def _replace_one(url: str, userinfo: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{userinfo}{host}"))


def _replace_login(url: str, userinfo: str) -> str:
    return ",".join(_replace_one(part, userinfo) for part in split_urls(url))


def has_login(url: str) -> bool:
    return any("@" in urllib.parse.urlsplit(part).netloc for part in url.split(","))


def strip_login(url: str) -> str:
    """``url`` without its user and password (for a banner, a log, or another login)."""
    return _replace_login(url, "")


def with_login(url: str, login: NatsLogin) -> str:
    """``nats://<user>:<password>@host:port``: the login in the URL (default inbox prefix);
    in each URL of a cluster's comma-separated list."""
    user = urllib.parse.quote(login.user, safe="")
    password = urllib.parse.quote(login.password, safe="")
    return _replace_login(url, f"{user}:{password}@")


def url_login(url: str) -> tuple[str, str] | None:
    """The (user, password) a URL (or the first of a list) carries, decoded; None without."""
    for part in split_urls(url):
        parts = urllib.parse.urlsplit(part)
        if parts.username is not None and parts.password is not None:
            return urllib.parse.unquote(parts.username), urllib.parse.unquote(parts.password)
    return None


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***`` (in each URL of a list)."""
    redacted = []
    for part in split_urls(url):
        parts = urllib.parse.urlsplit(part)
        redacted.append(
            part if parts.password is None else _replace_one(part, f"{parts.username}:***@")
        )
    return ",".join(redacted)


# -- how a client connects ----------------------------------------------------------------------


def login_options(
    user: str, *, url: str, credentials_dir: Path | None, required: bool
) -> dict[str, Any]:
    """``nats.connect(**options)`` to connect to ``url`` as ``user``.

    The login comes from ``credentials_dir``; when it has none for ``user`` and it is not
    ``required``, the URL is used as given (its own login, or none).
    """
    if credentials_dir is not None:
        try:
            login = load_login(credentials_dir, user)
        except MissingCredentials:
            if required:
                raise
        else:
            return {"servers": servers_option(strip_login(url)), **login.connect_options()}
    return {"servers": servers_option(url)}


def client_connect_options(user: str, settings: InfraSettings) -> dict[str, Any]:
    """How a command line client connects as ``user``, from the settings (the environment).

    1. ``NATS_CREDENTIALS_DIR`` set: ``<dir>/<user>.json`` (required).
    2. ``NATS_URL`` carrying a login: that login, as given.
    3. Otherwise the embedded server's ``<EO_STATE_DIR>/credentials/<user>.json``, required
       when no ``NATS_URL`` is set (a server without authentication needs none).
    """
    url = settings.nats_url or f"nats://127.0.0.1:{settings.nats_port}"
    if settings.nats_credentials_dir is not None:
        return login_options(
            user, url=url, credentials_dir=settings.nats_credentials_dir, required=True
        )
    if settings.nats_url and has_login(settings.nats_url):
        return {"servers": servers_option(settings.nats_url)}
    return login_options(
        user,
        url=url,
        credentials_dir=settings.state_dir / CREDENTIALS_FOLDER,
        required=not settings.nats_url,
    )
