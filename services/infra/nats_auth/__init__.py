"""NATS users and what each may do (DESIGN.md section 7): the public names of its modules.

- ``users``: the ``EO`` account's users (router, operator, OW systems, providers) and their
  permissions;
- ``credentials``: their logins, generated once into private ``<user>.json`` files;
- ``server_config``: the users rendered as nats-server's ``accounts`` block or its template;
- ``urls``: NATS URLs (one server or a cluster's list) with or without a login;
- ``connect``: ``nats.connect()`` options to connect as one user.
"""

from services.infra.nats_auth.connect import client_connect_options, login_options
from services.infra.nats_auth.credentials import (
    CREDENTIALS_FOLDER,
    MissingCredentials,
    NatsLogin,
    ensure_credentials,
    load_login,
)
from services.infra.nats_auth.server_config import (
    accounts_config,
    accounts_template,
    password_variable,
    write_accounts,
)
from services.infra.nats_auth.urls import (
    has_login,
    redact,
    servers_option,
    split_urls,
    strip_login,
    url_login,
    with_login,
)
from services.infra.nats_auth.users import (
    ACCOUNT,
    DEFAULT_OW_SYSTEMS,
    DEPLOY_OW_SYSTEMS,
    OPERATOR_USER,
    ROUTER_USER,
    NatsUser,
    all_ow_systems,
    default_users,
    inbox_prefix,
    operator_user,
    ow_user,
    provider_user,
    provider_user_name,
    router_user,
    users_to_add,
)

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
    "all_ow_systems",
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
    "servers_option",
    "split_urls",
    "strip_login",
    "url_login",
    "users_to_add",
    "with_login",
    "write_accounts",
]
