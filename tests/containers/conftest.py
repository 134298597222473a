"""The compose stack on a real Docker engine, for ``make container-test``.

One stack for the whole run: the engine found or started, the images pulled or built, the
stack up, then the scenarios in order, then ``compose down -v`` and the engine stopped if it
was started here, whatever happened. Each scenario reports one summary line
(``scenario=<name> accepted=N delivered=N lost=N duplicates=N ...``), printed as it ends and
again at the end of the run.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from tests.containers.engine import EngineUnavailable, start_engine
from tests.containers.stack import Stack

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.containers.engine import Engine

LINES = pytest.StashKey[list[str]]()


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        found = start_engine()
    except EngineUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"make container-test must run in CI: {exc}")
        pytest.skip(str(exc))
    try:
        yield found
    finally:
        found.close()


@pytest.fixture(scope="session")
def stack(engine: Engine, request: pytest.FixtureRequest) -> Iterator[Stack]:
    s = Stack(engine)
    s.down()  # a run interrupted before its own down left the stack up
    s.resolve_images()
    build_s = s.build()
    try:
        up_s = s.up()
        _say(
            request.config,
            f"stack images={','.join(sorted(set(s.images.values())))} "
            f"build_s={build_s:.1f} up_s={up_s:.1f} engine={engine.notes[0]!r}",
        )
        yield s
    except BaseException:
        print(s.compose("logs", "--no-color", "--tail", "60", check=False).stdout[-20000:])
        raise
    finally:
        s.down()
        left = s.leftovers()
        assert not left, f"compose down -v left {left}"


def _say(config: pytest.Config, line: str) -> None:
    config.stash.setdefault(LINES, []).append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Print a scenario's summary line now, and again in the run's summary."""
    return lambda line: _say(request.config, line)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    lines = config.stash.get(LINES, [])
    if lines:
        terminalreporter.section("container scenarios")
        for line in lines:
            terminalreporter.write_line(line)
