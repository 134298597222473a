"""What ``pip install warren`` gives a user: one import name, a small core, the extra named.

Builds the wheel from this checkout, checks what it contains and requires, then installs it
(no extras) into a fresh virtual environment and uses it as a newcomer would.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = {"anyio", "pika", "prometheus-client", "h11"}
WEB = {"starlette", "httpx", "google-auth"}

pytestmark = pytest.mark.timeout(300)


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                 "--no-build-isolation", "-w", out, ROOT, cwd=out)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (found,) = out.glob("warren-*.whl")
    return found


def _requirement_name(line: str) -> str:
    name = line.split(";")[0].strip()
    for stop in "<>=!~[ (":
        name = name.split(stop)[0]
    return name.lower()


def test_the_wheel_holds_the_library_and_the_services(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"warren", "warren_services"}
    assert "warren_services/push_sender.py" in names
    assert "warren/testing/pytest_plugin.py" in names
    assert "warren/py.typed" in names
    assert not any(n.startswith(("runtime/", "services/")) for n in names)


def test_the_core_pulls_no_web_framework(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    core = {_requirement_name(r) for r in requires if "extra ==" not in r}
    services = {_requirement_name(r) for r in requires if "extra == 'services'" in r}
    assert core == CORE
    assert services >= WEB


@pytest.mark.scenario
def test_installed_without_extras_it_works_and_names_the_extra(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    py, warren = venv / "bin" / "python", venv / "bin" / "warren"
    installed = _run(py, "-m", "pip", "install", "-q", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr

    frozen = _run(py, "-m", "pip", "list", "--format=freeze", cwd=tmp_path).stdout.lower()
    assert not any(f"{web}==" in frozen for web in WEB), frozen

    assert _run(py, "-c", "from warren import Publisher, Consumer, select", cwd=tmp_path)\
        .returncode == 0  # fmt: skip
    assert _run(py, "-c", "import warren.testing", cwd=tmp_path).returncode == 0
    for name in ("runtime", "services"):
        gone = _run(py, "-c", f"import {name}", cwd=tmp_path)
        assert gone.returncode != 0 and "ModuleNotFoundError" in gone.stderr, name

    listed = _run(warren, "services", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "demo-publisher" in listed.stdout
    assert "pip install 'warren[services]'" in listed.stdout  # for api, push-sender, ...

    api = _run(warren, "run", "api", cwd=tmp_path)
    assert api.returncode == 2
    assert "pip install 'warren[services]'" in api.stderr
    assert "Traceback" not in api.stderr


@pytest.mark.scenario
def test_an_editable_install_imports_the_repository_folders(tmp_path: Path) -> None:
    """``pip install -e .`` serves ``warren`` from ``runtime/warren`` and the services from
    ``services/warren_services`` themselves: no copy, no link tree, nothing to refresh."""
    venv = tmp_path / "venv"
    assert _run(sys.executable, "-m", "venv", venv, cwd=tmp_path).returncode == 0
    py = venv / "bin" / "python"
    installed = _run(py, "-m", "pip", "install", "-q", "--no-deps", "-e", ROOT, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    script = "import importlib.util as u; print(u.find_spec('warren').origin); " \
        "print(u.find_spec('warren_services').origin)"  # fmt: skip
    where = _run(py, "-c", script, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [
        str(ROOT / "runtime" / "warren" / "__init__.py"),
        str(ROOT / "services" / "warren_services" / "__init__.py"),
    ]
