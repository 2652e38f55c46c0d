"""The directory service's settings, read from the environment in one place."""

import os
from collections.abc import Mapping

import msgspec


class DirectorySettings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    #: Bearer token that may write providers and sites. Unset: the API is read-only.
    admin_token: str | None = None
    pool_min_size: int = 2
    pool_max_size: int = 10
    apply_migrations: bool = True
    load_seed: bool = True
    #: "offline" (bundled gazetteer) or "nominatim" (OpenStreetMap; needs network access).
    geocoder: str = "offline"
    geocoder_user_agent: str = "eo-referrals-directory"
    #: The router's public address, for the office finder's links to the provider inbox and
    #: the referral tracker (the router serves them).
    router_url: str = "http://127.0.0.1:8001"

    @classmethod
    def from_env(
        cls, database_url: str, env: Mapping[str, str] | None = None
    ) -> "DirectorySettings":
        env = os.environ if env is None else env
        prefix = "DIRECTORY_"
        raw = {
            name.removeprefix(prefix).lower(): value
            for name, value in env.items()
            if name.startswith(prefix) and value
        }
        raw["database_url"] = database_url
        return msgspec.convert(raw, cls, strict=False)
