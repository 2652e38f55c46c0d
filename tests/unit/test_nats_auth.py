"""NATS users and permissions as configuration (DESIGN.md section 7), without a server."""

import json
import stat
from pathlib import Path

import msgspec
import pytest

from contracts.subjects import ow_durable, provider_durable
from services.directory.seed import seed_provider_ids
from services.infra.embedded import ServerStartError, running_servers
from services.infra.logs import redact_passwords
from services.infra.nats_auth import (
    DEPLOY_OW_SYSTEMS,
    MissingCredentials,
    NatsLogin,
    accounts_config,
    accounts_template,
    all_ow_systems,
    client_connect_options,
    default_users,
    ensure_credentials,
    load_login,
    operator_user,
    ow_user,
    password_variable,
    provider_user,
    redact,
    router_user,
    strip_login,
    users_to_add,
    with_login,
)
from services.infra.settings import InfraSettings
from services.router.party_consumers import ow_consumer_config, provider_consumer_config

DEPLOY = Path(__file__).parents[2] / "deploy" / "nats"
CCA = "canadian-career-academy"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_provider_may_use_its_own_subjects_and_consumer_only() -> None:
    user = provider_user(CCA)

    assert user.name == f"provider-{CCA}" == provider_durable(CCA)
    assert user.publish == (
        f"referral.response.{CCA}",
        f"referral.progress.{CCA}",
        f"$JS.API.CONSUMER.INFO.REFERRALS.provider-{CCA}",
        f"$JS.API.CONSUMER.MSG.NEXT.REFERRALS.provider-{CCA}",
        f"$JS.ACK.REFERRALS.provider-{CCA}.>",
    )
    assert user.subscribe == (
        f"referral.offered.{CCA}",
        f"referral.notice.{CCA}",
        f"_INBOX_provider-{CCA}.>",
    )


def test_an_ow_system_may_use_its_own_subjects_and_consumer_only() -> None:
    user = ow_user("ow-lanark")

    assert ow_durable("ow-lanark") == "ow-ow-lanark"
    assert user.publish == (
        "referral.requested.ow-lanark",
        "referral.cancel.ow-lanark",
        "$JS.API.CONSUMER.INFO.REFERRALS.ow-ow-lanark",
        "$JS.API.CONSUMER.MSG.NEXT.REFERRALS.ow-ow-lanark",
        "$JS.ACK.REFERRALS.ow-ow-lanark.>",
    )
    assert user.subscribe == ("referral.status.ow-lanark", "_INBOX_ow-lanark.>")


def test_every_party_subject_ends_in_the_partys_own_token() -> None:
    for user in default_users(ow_systems=["ow-lanark", "ow-ottawa"], provider_ids=[CCA, "x-1"]):
        if user.role not in ("ow", "provider"):
            continue
        token = user.provider_id or user.name  # a provider's id, an OW system's name
        durable = provider_durable(token) if user.role == "provider" else ow_durable(token)
        for subject in (*(user.publish or ()), *(user.subscribe or ())):
            if subject.startswith("referral."):
                assert subject.rsplit(".", 1)[1] == token, (user.name, subject)
            elif subject.startswith("$JS."):
                assert f".REFERRALS.{durable}" in subject, (user.name, subject)
            else:
                assert subject == f"_INBOX_{user.name}.>", (user.name, subject)


def test_router_and_operator() -> None:
    assert router_user().publish == ("referral.>", "$JS.API.>", "$JS.ACK.>")
    assert router_user().subscribe == ("referral.>", "_INBOX.>")
    assert router_user().inbox_prefix == "_INBOX"
    assert operator_user().publish is None
    assert operator_user().subscribe is None


def test_nobody_but_router_and_operator_may_read_the_shared_inbox() -> None:
    for user in default_users(provider_ids=seed_provider_ids()):
        if user.name in ("router", "operator"):
            continue
        assert user.subscribe is not None
        assert all(not s.startswith("_INBOX.") and s != ">" for s in user.subscribe)
        assert all("*" not in s and s != ">" for s in user.publish or ())


@pytest.mark.parametrize("name", ["router", "operator", "provider-x", "Bad", "a.b", "", "a b"])
def test_an_ow_system_cannot_take_a_reserved_or_invalid_name(name: str) -> None:
    with pytest.raises(ValueError, match=r"cannot name an OW system|not a NATS user name"):
        ow_user(name)


def test_a_provider_id_that_is_not_a_slug_gets_no_user() -> None:
    with pytest.raises(ValueError, match="is not a provider id"):
        provider_user("a.>")


def test_user_names_are_unique() -> None:
    with pytest.raises(ValueError, match="given twice: ow-lanark"):
        default_users(ow_systems=["ow-lanark", "ow-lanark"], provider_ids=[])


def test_default_users_cover_the_seed_providers() -> None:
    names = [user.name for user in default_users(provider_ids=seed_provider_ids())]

    assert names[:5] == ["router", "operator", "ow-lanark", "eo-cli", "eo-demo"]
    assert names[5:] == [f"provider-{p}" for p in seed_provider_ids()]
    assert len(seed_provider_ids()) == 3


def test_the_server_configuration_holds_each_users_permissions() -> None:
    users = default_users(ow_systems=["ow-lanark"], provider_ids=[CCA])
    passwords = {user.name: f"pw-{user.name}" for user in users}
    config = accounts_config(users, passwords)

    assert config.startswith("accounts {\n  EO {\n    jetstream: enabled\n")
    assert '        user: "ow-lanark"\n        password: "pw-ow-lanark"\n' in config
    assert f'            "$JS.ACK.REFERRALS.provider-{CCA}.>",\n' in config
    assert '            "referral.status.ow-lanark",\n' in config
    assert '            "$JS.ACK.REFERRALS.ow-ow-lanark.>",\n' in config
    assert '"referral.status",' not in config  # v1's shared subjects are gone
    template = accounts_config(users, None)
    assert f"password: $NATS_PASSWORD_PROVIDER_{CCA.upper().replace('-', '_')}\n" in template
    assert "pw-" not in template


def test_the_deploy_template_is_what_the_generator_writes() -> None:
    users = default_users(ow_systems=DEPLOY_OW_SYSTEMS, provider_ids=seed_provider_ids())

    assert (DEPLOY / "accounts.template.conf").read_text() == accounts_template(users), (
        "regenerate it: .venv/bin/eo nats-config > deploy/nats/accounts.template.conf"
    )
    assert 'include "accounts.conf"' in (DEPLOY / "nats-server.conf").read_text()


def test_password_variables_are_environment_names() -> None:
    assert password_variable("provider-a-1") == "NATS_PASSWORD_PROVIDER_A_1"


def test_credentials_are_private_generated_once_and_reused(tmp_path: Path) -> None:
    folder = tmp_path / "credentials"
    users = default_users(ow_systems=["ow-lanark"], provider_ids=[CCA])

    first = ensure_credentials(folder, users)
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == sorted(f"{user.name}.json" for user in users)
    assert mode(folder) == 0o700
    assert all(mode(f) == 0o600 for f in files)
    assert len({login.password for login in first.values()}) == len(users)
    assert json.loads((folder / "ow-lanark.json").read_text()) == {
        "user": "ow-lanark",
        "password": first["ow-lanark"].password,
        "inbox_prefix": "_INBOX_ow-lanark",
    }

    (folder / "router.json").chmod(0o644)
    (folder / "operator.json").write_text("not json")
    second = ensure_credentials(folder, users)
    assert second["router"] == first["router"]  # reused
    assert mode(folder / "router.json") == 0o600  # and made private again
    assert second["operator"] != first["operator"]  # unreadable: a new one
    assert load_login(folder, "ow-lanark") == first["ow-lanark"]


def test_a_missing_login_names_the_user_and_what_is_there(tmp_path: Path) -> None:
    ensure_credentials(tmp_path, [router_user()])
    with pytest.raises(MissingCredentials, match=r"'provider-x' in .* \(users there: router\)"):
        load_login(tmp_path, "provider-x")


def test_a_login_never_shows_its_password() -> None:
    login = NatsLogin(user="u", password="secret-pw", inbox_prefix="_INBOX_u")
    assert "secret-pw" not in repr(login)
    assert "secret-pw" not in str(login)


def test_urls_carry_strip_and_redact_a_login() -> None:
    login = NatsLogin(user="router", password="p-w_1", inbox_prefix="_INBOX")
    url = with_login("nats://127.0.0.1:4222", login)

    assert url == "nats://router:p-w_1@127.0.0.1:4222"
    assert strip_login(url) == "nats://127.0.0.1:4222"
    assert redact(url) == "nats://router:***@127.0.0.1:4222"
    assert with_login("nats://other:old@h:1", login) == "nats://router:p-w_1@h:1"


def test_logs_never_carry_a_url_password() -> None:
    event = {"event": "x", "nats": "nats://router:s3cret@127.0.0.1:1", "n": 1}

    assert redact_passwords(None, "info", event)["nats"] == "nats://router:***@127.0.0.1:1"


def test_where_a_command_line_client_finds_its_login(tmp_path: Path) -> None:
    state = tmp_path / "state"
    logins = ensure_credentials(state / "credentials", [ow_user("eo-cli")])
    own = tmp_path / "own"
    own_logins = ensure_credentials(own, [ow_user("eo-cli")])

    # Embedded (no NATS_URL): the state folder's login, on the embedded port.
    embedded = InfraSettings(state_dir=state, nats_port=4999)
    options = client_connect_options("eo-cli", embedded)
    assert options == {"servers": "nats://127.0.0.1:4999", **logins["eo-cli"].connect_options()}
    with pytest.raises(MissingCredentials):
        client_connect_options("provider-x", embedded)

    # NATS_URL without a login: the state folder's login if it has one, else the URL as is.
    plain = InfraSettings(state_dir=state, nats_url="nats://h:1")
    assert client_connect_options("eo-cli", plain)["password"] == logins["eo-cli"].password
    assert client_connect_options("provider-x", plain) == {"servers": "nats://h:1"}

    # NATS_URL with a login: that login.
    given = InfraSettings(state_dir=state, nats_url="nats://u:p@h:1")
    assert client_connect_options("eo-cli", given) == {"servers": "nats://u:p@h:1"}

    # NATS_CREDENTIALS_DIR: its login, required, and it wins over the URL's.
    configured = InfraSettings(state_dir=state, nats_url="nats://u:p@h:1", nats_credentials_dir=own)
    options = client_connect_options("eo-cli", configured)
    assert options["servers"] == "nats://h:1"
    assert options["password"] == own_logins["eo-cli"].password
    assert options["inbox_prefix"] == "_INBOX_eo-cli"
    with pytest.raises(MissingCredentials):
        client_connect_options("provider-x", configured)


def test_the_settings_read_nats_credentials_dir() -> None:
    settings = InfraSettings.from_env({"NATS_CREDENTIALS_DIR": "/etc/eo/nats"})
    assert settings.nats_credentials_dir == Path("/etc/eo/nats")


def test_users_to_add_are_the_wanted_ones_the_server_lacks() -> None:
    current = default_users(provider_ids=[CCA])
    wanted = [provider_user(p) for p in (CCA, "lanark-jobs", "perth-works", "lanark-jobs")]
    added = users_to_add(current, wanted)
    assert [user.name for user in added] == ["provider-lanark-jobs", "provider-perth-works"]
    assert added[0] == provider_user("lanark-jobs")  # the permissions of any provider's user
    # Nothing new: nothing to do (the sync is a no-op), whatever the order.
    assert users_to_add([*current, *added], list(reversed(wanted))) == []
    assert users_to_add(current, []) == []
    # An OW system the server has is not added again either.
    assert users_to_add(current, [ow_user("ow-lanark"), ow_user("ow-ottawa")]) == [
        ow_user("ow-ottawa")
    ]


def test_more_ow_systems_come_from_the_settings() -> None:
    settings = InfraSettings.from_env({"EO_OW_SYSTEMS": " ow-ottawa, ow-lanark,,ow-kingston "})
    assert settings.ow_systems == ("ow-ottawa", "ow-lanark", "ow-kingston")
    assert all_ow_systems(settings.ow_systems) == [
        "ow-lanark", "eo-cli", "eo-demo", "ow-ottawa", "ow-kingston",
    ]  # fmt: skip
    assert all_ow_systems(settings.ow_systems, builtin=DEPLOY_OW_SYSTEMS) == [
        "ow-lanark", "ow-ottawa", "ow-kingston",
    ]  # fmt: skip
    assert InfraSettings.from_env({}).ow_systems == ()
    assert all_ow_systems(()) == ["ow-lanark", "eo-cli", "eo-demo"]


def test_an_ow_system_of_the_settings_that_cannot_be_a_user_stops_the_start(
    tmp_path: Path,
) -> None:
    settings = InfraSettings(
        state_dir=tmp_path, database_url="postgresql://unused", ow_systems=("router",)
    )
    with (
        pytest.raises(ServerStartError, match=r"'router' cannot name an OW system.*EO_OW_SYSTEMS"),
        running_servers(settings, provider_ids=[]),
    ):
        pass  # nothing is started: the users are refused first


def test_the_user_sync_interval_is_a_positive_number_of_seconds() -> None:
    assert InfraSettings.from_env({}).nats_user_sync_s == 2.0
    assert InfraSettings.from_env({"EO_NATS_USER_SYNC_S": "0.5"}).nats_user_sync_s == 0.5
    for bad in ("0", "-1", "soon"):
        with pytest.raises(msgspec.ValidationError, match="EO_NATS_USER_SYNC_S"):
            InfraSettings.from_env({"EO_NATS_USER_SYNC_S": bad})


def test_each_partys_consumer_is_the_one_its_user_may_read() -> None:
    config = provider_consumer_config(CCA)
    assert config.durable_name == config.name == f"provider-{CCA}"
    assert config.filter_subjects == [f"referral.offered.{CCA}", f"referral.notice.{CCA}"]
    assert set(config.filter_subjects) <= set(provider_user(CCA).subscribe or ())
    assert f"$JS.API.CONSUMER.MSG.NEXT.REFERRALS.{config.name}" in (
        provider_user(CCA).publish or ()
    )

    config = ow_consumer_config("ow-lanark")
    assert config.durable_name == config.name == "ow-ow-lanark"
    assert config.filter_subjects == ["referral.status.ow-lanark"]
    assert set(config.filter_subjects) <= set(ow_user("ow-lanark").subscribe or ())
    assert f"$JS.API.CONSUMER.MSG.NEXT.REFERRALS.{config.name}" in (
        ow_user("ow-lanark").publish or ()
    )


def test_a_cluster_url_lists_its_nodes_and_the_login_holds_for_each() -> None:
    from services.infra.nats_auth import servers_option, split_urls, url_login

    cluster = "nats://router:p%40ss@n1:4222, nats://n2:4222,nats://n3:4222"
    assert split_urls(cluster) == [
        "nats://router:p%40ss@n1:4222",
        "nats://router:p%40ss@n2:4222",
        "nats://router:p%40ss@n3:4222",
    ]
    assert url_login(cluster) == ("router", "p@ss")
    assert strip_login(cluster) == "nats://n1:4222,nats://n2:4222,nats://n3:4222"
    assert redact(cluster).count("router:***@") == 3
    assert "p%40ss" not in redact(cluster)
    assert servers_option(strip_login(cluster)) == [
        "nats://n1:4222",
        "nats://n2:4222",
        "nats://n3:4222",
    ]
    assert servers_option("nats://h:1") == "nats://h:1"  # one server: as before
    assert url_login("nats://h:1") is None
