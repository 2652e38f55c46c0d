"""The NATS users' logins, kept as private files in a credentials folder.

Passwords are generated (``secrets.token_urlsafe``) into a credentials folder, one JSON file per
user (``<user>.json``: ``user``, ``password``, ``inbox_prefix``; mode 0600, folder 0700),
created once and reused, so a restart keeps every party's login. Nothing here is committed.
"""

import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import msgspec

from services.infra.nats_auth.users import NatsUser

#: The credentials folder under the state folder (EO_STATE_DIR) of the embedded server.
CREDENTIALS_FOLDER = "credentials"


class MissingCredentials(LookupError):
    """No credentials file for a user: say which, where, and which users exist there."""


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


def write_private(path: Path, data: bytes) -> None:
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
            write_private(path, msgspec.json.format(msgspec.json.encode(login)) + b"\n")
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
