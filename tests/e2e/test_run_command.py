"""`eo run` (what `make run` starts) as a user sees it: up, seeded, answering, Ctrl-C stops it."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from services.infra.embedded import free_port

pytestmark = pytest.mark.e2e


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_eo_run_serves_the_seeded_directory_until_ctrl_c() -> None:
    state = Path(tempfile.mkdtemp(prefix="eo-test-run-"))
    ports = {"EO_PG_PORT": free_port(), "EO_NATS_PORT": free_port(), "DIRECTORY_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env |= {k: str(v) for k, v in ports.items()} | {"EO_STATE_DIR": str(state)}
    eo = Path(sys.executable).parent / "eo"
    process = subprocess.Popen(
        [str(eo), "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{ports['DIRECTORY_PORT']}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            try:
                if httpx.get(f"{base}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "eo run did not become ready in 90 s"
            time.sleep(0.2)
        response = httpx.get(
            f"{base}/api/v1/sites/nearest",
            params={"community": "Almonte", "service": "resume_writing"},
        )
        assert response.status_code == 200
        first = response.json()["results"][0]
        assert first["provider"]["name"] == "Canadian Career Academy"
        assert (state / "admin-token").stat().st_mode & 0o077 == 0
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
        shutil.rmtree(state, ignore_errors=True)
    assert process.returncode == 0, output
    assert f"postgresql://postgres@127.0.0.1:{ports['EO_PG_PORT']}/eo" in output
    assert f"nats://127.0.0.1:{ports['EO_NATS_PORT']}" in output
    assert "JetStream enabled" in output
    assert not port_open(ports["EO_PG_PORT"])
    assert not port_open(ports["EO_NATS_PORT"])
