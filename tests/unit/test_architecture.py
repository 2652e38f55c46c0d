"""Which room may import which: the router reaches the directory through one module, the
infrastructure knows no service, the pages' shared assets know neither service, and the
router's decisions load no I/O library."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def imported_modules(package: str) -> dict[str, set[str]]:
    """For each module file of ``package`` (a folder under the repo), the modules it imports,
    at any depth of the file (function-level imports included)."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[str(path.relative_to(ROOT))] = names
    return found


def test_the_router_imports_exactly_one_module_of_the_directory() -> None:
    reached = {
        name
        for names in imported_modules("services/router").values()
        for name in names
        if name.startswith("services.directory")
    }
    # ``from services.directory import candidates`` names the package and the module.
    assert reached - {"services.directory"} == {"services.directory.candidates"}


def test_the_infrastructure_imports_no_service() -> None:
    offending = {
        module: sorted(
            n for n in names if n.startswith("services.") and not n.startswith("services.infra")
        )
        for module, names in imported_modules("services/infra").items()
    }
    assert {module: names for module, names in offending.items() if names} == {}


def test_the_shared_web_assets_import_no_service_but_access() -> None:
    """``services.web`` serves both services' pages: it may know who calls (``PUBLIC``), not
    either service."""
    offending = {
        module: sorted(
            n for n in names if n.startswith("services.") and not n.startswith("services.access")
        )
        for module, names in imported_modules("services/web").items()
    }
    assert {module: names for module, names in offending.items() if names} == {}


@pytest.mark.parametrize("module", ["services.router.lifecycle", "services.router.matching"])
def test_the_decisions_load_no_io_library(module: str) -> None:
    io_libraries = ["asyncpg", "nats", "litestar", "httpx", "uvicorn", "socket"]
    code = f"import sys, {module}\nprint(','.join(m for m in {io_libraries!r} if m in sys.modules))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
