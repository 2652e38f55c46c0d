"""deploy/ checked against the code: every file parses, the image, the compose stack and the
Kubernetes manifests name the commands, ports and variables the code has, the manifests
validate against the Kubernetes schemas (offline, kubernetes-validate bundles them), and
nats-server accepts the cluster configuration (``nats-server -t``).
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.cli import parser
from services.directory.app import create_app as create_directory_app
from services.directory.seed import seed_provider_ids
from services.directory.settings import DirectorySettings
from services.infra.nats_auth import DEPLOY_OW_SYSTEMS, default_users, password_variable
from services.infra.settings import InfraSettings
from services.router.app import create_app as create_router_app
from services.router.settings import RouterSettings

DEPLOY = Path(__file__).parents[2] / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
KUBERNETES_VERSION = "1.30.0"
#: Variables of the images eo does not run: PostgreSQL's (the official image) and the ones
#: deploy/postgres/init-roles.sh passes to roles.sql.
POSTGRES_IMAGE_VARIABLES = {
    "POSTGRES_DB",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "EO_MIGRATE_DB_PASSWORD",
    "EO_DIRECTORY_DB_PASSWORD",
    "EO_ROUTER_DB_PASSWORD",
}


def settings_variables() -> set[str]:
    """Every environment variable the code reads for its settings."""
    names = {"DATABASE_URL", "NATS_URL", "NATS_CREDENTIALS_DIR"}
    names |= {"EO_STATE_DIR", "EO_PG_PORT", "EO_NATS_PORT", "EO_LOG_LEVEL"}
    names |= {"EO_OW_SYSTEMS", "EO_NATS_USER_SYNC_S"}
    names |= {f"DIRECTORY_{f.upper()}" for f in DirectorySettings.__struct_fields__}
    names |= {f"ROUTER_{f.upper()}" for f in RouterSettings.__struct_fields__}
    names -= {"DIRECTORY_DATABASE_URL", "ROUTER_DATABASE_URL", "ROUTER_NATS_URL"}
    return names


def test_the_settings_list_matches_infra_settings() -> None:
    for name in ("DATABASE_URL", "NATS_URL", "EO_STATE_DIR", "EO_LOG_LEVEL"):
        assert name in settings_variables()
    # InfraSettings reads exactly these: a new one must be added above.
    env = {name: "1" for name in ("EO_PG_PORT", "EO_NATS_PORT")}
    assert InfraSettings.from_env(env).pg_port == 1
    assert "ROUTER_STREAM_REPLICAS" in settings_variables()


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def commands() -> set[str]:
    sub = next(a for a in parser()._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


def test_every_yaml_file_parses() -> None:
    files = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]
    assert len(files) >= 6
    for path in files:
        assert load_all(path), path


def test_the_services_have_the_commands_the_image_and_manifests_run() -> None:
    assert {"directory", "router", "migrate"} <= commands()
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["eo"]' in dockerfile
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    assert re.search(r"^EXPOSE 8000 8001$", dockerfile, re.M)


# -- compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def eo_services(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in spec["services"].items()
        if service.get("image", "").startswith("eo-referrals")
    }


def test_compose_has_the_full_stack() -> None:
    services = compose()["services"]
    assert {"postgres", "nats-1", "nats-2", "nats-3", "migrate", "directory"} <= set(services)
    routers = [name for name, s in eo_services(compose()).items() if s["command"] == ["router"]]
    assert len(routers) == 2
    for name in ("nats-1", "nats-2", "nats-3"):
        command = services[name]["command"]
        assert command[command.index("--name") + 1] == name
        routes = command[command.index("--routes") + 1].split(",")
        assert routes == [f"nats-route://nats-{n}:6222" for n in (1, 2, 3)]


def test_compose_commands_ports_and_variables_are_the_code_s() -> None:
    known = settings_variables()
    ports = {"directory": DirectorySettings(database_url="x").port}
    ports["router"] = RouterSettings(database_url="x", nats_url="x").port
    for name, service in eo_services(compose()).items():
        command = service["command"]
        assert command[0] in commands(), name
        env = service.get("environment", {})
        assert set(env) <= known, (name, set(env) - known)
        if command[0] in ports:
            container = {int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])}
            assert container == {ports[command[0]]}, name
            port_variable = f"{command[0].upper()}_PORT"
            assert int(env[port_variable]) == ports[command[0]]
        if command[0] == "router":
            assert env["ROUTER_STREAM_REPLICAS"] == "3"
            assert len(env["NATS_URL"].split(",")) == 3
        if command[0] in ("directory", "router"):
            assert env[f"{command[0].upper()}_HOST"] == "0.0.0.0"
    postgres = compose()["services"]["postgres"]["environment"]
    assert set(postgres) <= POSTGRES_IMAGE_VARIABLES


def test_env_example_gives_every_variable_compose_and_nats_need() -> None:
    example = {
        line.split("=", 1)[0]
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    used = set(re.findall(r"\$\{(\w+)", (DEPLOY / "compose.yaml").read_text()))
    assert used <= example
    template = (DEPLOY / "nats" / "accounts.template.conf").read_text()
    assert set(re.findall(r"\$(NATS_PASSWORD_\w+)", template)) <= example
    users = default_users(ow_systems=DEPLOY_OW_SYSTEMS, provider_ids=seed_provider_ids())
    assert {password_variable(u.name) for u in users} <= example


# -- Kubernetes ---------------------------------------------------------------------------------


def k8s_documents() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in load_all(path)]


@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_manifests_validate_against_the_kubernetes_schemas(path: Path) -> None:
    for doc in load_all(path):
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")


def test_a_wrong_manifest_fails_validation() -> None:
    """The validator is really checking: a typo in a probe is caught offline."""
    deployment = next(d for d in k8s_documents() if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def containers(kind: str, name: str) -> list[dict[str, Any]]:
    doc = next(d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name)
    found: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return found


def test_deployments_probe_ready_and_health_on_the_service_ports() -> None:
    apps = {
        "directory": (DirectorySettings(database_url="x").port, create_directory_app),
        "router": (RouterSettings(database_url="x", nats_url="x").port, create_router_app),
    }
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]
    for name, (port, _) in apps.items():
        (container,) = containers("Deployment", name)
        assert container["args"] == [name]
        assert [p["containerPort"] for p in container["ports"]] == [port]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert int(config[f"{name.upper()}_PORT"]) == port
        service = next(
            d for d in k8s_documents() if d["kind"] == "Service" and d["metadata"]["name"] == name
        )
        assert [p["port"] for p in service["spec"]["ports"]] == [port]
    directory = create_directory_app(DirectorySettings(database_url="postgresql://x"))
    router = create_router_app(RouterSettings(database_url="postgresql://x", nats_url="nats://x"))
    for app in (directory, router):
        paths = {route.path for route in app.routes}
        assert {"/ready", "/health"} <= paths


def test_manifest_variables_are_the_code_s() -> None:
    known = settings_variables()
    config = next(d for d in k8s_documents() if d["kind"] == "ConfigMap")["data"]
    assert set(config) <= known
    assert config["ROUTER_STREAM_REPLICAS"] == "3"
    for kind, name in (
        ("Deployment", "directory"),
        ("Deployment", "router"),
        ("Job", "eo-migrate"),
    ):
        (container,) = containers(kind, name)
        assert container["args"][0] in commands()
        names = {variable["name"] for variable in container.get("env", [])}
        assert names <= known, names - known
        assert "DATABASE_URL" in names


def test_the_routers_have_a_disruption_budget() -> None:
    budgets = [d for d in k8s_documents() if d["kind"] == "PodDisruptionBudget"]
    router = next(
        d
        for d in k8s_documents()
        if d["kind"] == "Deployment" and d["metadata"]["name"] == "router"
    )
    selector = router["spec"]["selector"]["matchLabels"]
    assert any(b["spec"]["selector"]["matchLabels"] == selector for b in budgets)
    assert router["spec"]["replicas"] >= 2


def test_kustomization_names_every_manifest_and_existing_files() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(f"k8s/{p.name}" for p in K8S)
    for generator in kustomization["configMapGenerator"]:
        for entry in generator["files"]:
            assert (DEPLOY / entry.split("=", 1)[1]).is_file(), entry


# -- nats-server and PostgreSQL files -----------------------------------------------------------


NATS_SERVER = Path(sys.executable).parent / "nats-server"


def test_the_nats_readme_gives_each_party_its_own_subjects() -> None:
    """deploy/nats/README.md's users table speaks contract v1.1, like the template."""
    text = (DEPLOY / "nats" / "README.md").read_text()
    for subject in (
        "referral.requested.<system>",
        "referral.cancel.<system>",
        "referral.status.<system>",
        "referral.offered.<id>",
        "referral.notice.<id>",
        "referral.response.<id>",
        "referral.progress.<id>",
        "$JS.API.CONSUMER.MSG.NEXT.REFERRALS.ow-<system>",
        "$JS.API.CONSUMER.MSG.NEXT.REFERRALS.provider-<id>",
    ):
        assert f"`{subject}`" in text, subject
    assert not re.search(r"`referral\.(requested|cancel|status)`", text)  # v1's shared ones
    template = (DEPLOY / "nats" / "accounts.template.conf").read_text()
    assert '"referral.status.ow-lanark"' in template
    assert not re.search(r'"referral\.(requested|cancel|status)"', template)


def test_nats_server_accepts_the_cluster_configuration(tmp_path: Path) -> None:
    shutil.copy(DEPLOY / "nats" / "nats-cluster.conf", tmp_path / "nats-cluster.conf")
    shutil.copy(DEPLOY / "nats" / "accounts.template.conf", tmp_path / "accounts.conf")
    template = (tmp_path / "accounts.conf").read_text()
    env = dict(os.environ)
    env |= {name: "secret" for name in re.findall(r"\$(NATS_PASSWORD_\w+)", template)}
    (tmp_path / "nats-cluster.conf").write_text(
        (tmp_path / "nats-cluster.conf").read_text().replace("/data/jetstream", str(tmp_path))
    )
    result = subprocess.run(
        [str(NATS_SERVER), "-t", "-c", str(tmp_path / "nats-cluster.conf"), "--name", "nats-1",
         "--routes", "nats-route://127.0.0.1:6222"],
        capture_output=True, text=True, env=env, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    text = (DEPLOY / "nats" / "nats-cluster.conf").read_text()
    assert 'sync_interval: "always"' in text
    assert re.search(r"cluster \{[^}]*name: eo", text)


def test_the_roles_script_creates_the_roles_the_urls_use() -> None:
    sql = (DEPLOY / "postgres" / "roles.sql").read_text()
    roles = set(re.findall(r"CREATE ROLE (\w+) LOGIN", sql))
    assert roles == {"eo_migrate", "eo_directory", "eo_router"}
    used = set(re.findall(r"postgresql://(\w+):", (DEPLOY / "compose.yaml").read_text()))
    used |= set(re.findall(r"postgresql://(\w+):", (DEPLOY / "k8s" / "config.yaml").read_text()))
    assert used == roles
    passwords = set(re.findall(r":'(\w+_password)'", sql))
    script = (DEPLOY / "postgres" / "init-roles.sh").read_text()
    assert passwords == set(re.findall(r"-v (\w+_password)=", script))
