"""NATS URLs with or without a login: one server's, or a cluster's comma-separated list.

A cluster's URL (``nats://router:<password>@n1:4222,nats://n2:4222,nats://n3:4222``) need
carry the login once: the nodes given without one get the first. Here a login is put into a
URL, taken out of it (for a banner or a log) or read from it, and a URL becomes nats-py's
``servers`` option.
"""

import urllib.parse

from services.infra.nats_auth.credentials import NatsLogin


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
