"""Settings every process shares: where the servers are and where embedded ones keep state.

A value that does not convert (``EO_PG_PORT=abc``) raises ``msgspec.ValidationError`` naming
the setting; the command line reports it as a configuration error.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import msgspec

#: Fixed loopback ports of the embedded servers for `make run`, away from the standard
#: 5432 / 4222 that a machine may already use. Tests pick free ports instead.
DEFAULT_PG_PORT = 55432
DEFAULT_NATS_PORT = 44222


class InfraSettings(msgspec.Struct, frozen=True, kw_only=True):
    #: Use this PostgreSQL instead of starting one (postgresql://user:pass@host:port/db).
    database_url: str | None = None
    #: Use this NATS (JetStream enabled) instead of starting one (nats://host:port, or
    #: nats://user:password@host:port: the router's login).
    nats_url: str | None = None
    #: Where the NATS users' credentials are (``<user>.json``) for a server given by NATS_URL;
    #: the embedded server generates them into ``<state_dir>/credentials``.
    nats_credentials_dir: Path | None = None
    #: Where embedded servers keep their data; survives restarts.
    state_dir: Path = Path(".state")
    pg_port: int = DEFAULT_PG_PORT
    nats_port: int = DEFAULT_NATS_PORT
    log_level: str = "info"
    #: OW systems that get a NATS user besides the built-in ones (nats_auth's
    #: DEFAULT_OW_SYSTEMS): EO_OW_SYSTEMS, comma-separated. The directory keeps no registry of
    #: OW systems, so this configuration is the list.
    ow_systems: tuple[str, ...] = ()
    #: Seconds between two looks for the directory's new providers, which then get a user on
    #: the embedded NATS (``eo run``, ``eo router``).
    nats_user_sync_s: Annotated[float, msgspec.Meta(gt=0)] = 2.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "InfraSettings":
        env = os.environ if env is None else env
        names = {
            "database_url": "DATABASE_URL",
            "nats_url": "NATS_URL",
            "nats_credentials_dir": "NATS_CREDENTIALS_DIR",
            "state_dir": "EO_STATE_DIR",
            "pg_port": "EO_PG_PORT",
            "nats_port": "EO_NATS_PORT",
            "log_level": "EO_LOG_LEVEL",
            "ow_systems": "EO_OW_SYSTEMS",
            "nats_user_sync_s": "EO_NATS_USER_SYNC_S",
        }
        raw: dict[str, object] = {key: env[name] for key, name in names.items() if env.get(name)}
        if isinstance(systems := raw.get("ow_systems"), str):
            raw["ow_systems"] = [part.strip() for part in systems.split(",") if part.strip()]
        # strict=False turns the environment's strings into ints and bools.
        try:
            return msgspec.convert(raw, cls, strict=False, dec_hook=_to_path)
        except msgspec.ValidationError as exc:
            message = str(exc)
            for key, name in names.items():
                message = message.replace(f"`$.{key}`", name)
            raise msgspec.ValidationError(message) from exc


def _to_path(kind: type, value: object) -> object:
    if kind is Path and isinstance(value, str):
        return Path(value)
    raise TypeError(f"no conversion to {kind}")  # msgspec reports it as a ValidationError
