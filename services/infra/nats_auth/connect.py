"""How a client connects as one NATS user: ``nats.connect(**options)`` from its login.

The login comes from a credentials folder (``<user>.json``) or from the URL itself; a command
line client finds both in its settings (the environment), see ``client_connect_options``.
"""

from pathlib import Path
from typing import Any

from services.infra.nats_auth.credentials import CREDENTIALS_FOLDER, MissingCredentials, load_login
from services.infra.nats_auth.urls import has_login, servers_option, strip_login
from services.infra.settings import InfraSettings


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
