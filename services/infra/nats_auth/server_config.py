"""The NATS users rendered as nats-server configuration: the ``accounts`` block.

``accounts_config`` writes it with the passwords (the embedded server, ``eo nats-config
--out``) or as a template whose passwords are environment variables. Nothing with a password
is committed: ``deploy/nats/`` holds the template, which reads the passwords from the
nats-server process's environment (``NATS_PASSWORD_<USER>``).
"""

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from services.infra.nats_auth.credentials import (
    CREDENTIALS_FOLDER,
    ensure_credentials,
    write_private,
)
from services.infra.nats_auth.users import ACCOUNT, NatsUser, Role


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
    "ow": "an OW system: its own requests, cancellations, status events and consumer only",
    "provider": "a provider: its own offers, notices, responses, progress and consumer only",
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
    write_private(path, (GENERATED_HEADER + accounts_config(users, passwords)).encode())
    return path


GENERATED_HEADER = """\
# Users and permissions of the EO referral flow, with their passwords: written by
# `eo nats-config --out`, readable by its owner only. Never commit it.
"""
