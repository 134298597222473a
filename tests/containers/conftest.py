"""The compose stack on a real Docker engine, for ``make container-test``.

One stack for the whole run: the engine found or started, the images pulled or built, the
stack up, then the scenarios in order, then ``compose down -v`` and the engine stopped if it
was started here, whatever happened. Each scenario reports one summary line
(``scenario=<name> accepted=N delivered=N lost=N duplicates=N ...``), printed as it ends and
again at the end of the run.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, NoReturn

import pytest

from tests.containers.engine import EngineUnavailable, start_engine
from tests.containers.stack import Stack

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from tests.containers.engine import Engine

LINES = pytest.StashKey[list[str]]()
STACK = pytest.StashKey["Stack"]()


def _interrupt(signum: int, _frame: object) -> NoReturn:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """The engine for the run. While it is held, SIGTERM and SIGHUP (a CI job cancelled,
    ``timeout`` expiring) end the run the way Ctrl-C does: the finalizers run, so the stack
    goes down and an engine started here stops."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield from _engine()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _engine() -> Iterator[Engine]:
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
    request.config.stash[STACK] = s
    try:
        s.down()  # a run killed before its own down left the stack up
        s.resolve_images()
        build_s = s.build()
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
        s.close()
        left = s.leftovers()
        assert not left, f"compose down -v left {left}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed scenario's report carries the services' last log lines."""
    report = yield
    stack = item.config.stash.get(STACK, None)
    if report.failed and call.when == "call" and stack is not None:
        logs = stack.compose("logs", "--no-color", "--tail", "40", check=False, timeout=60)
        report.sections.append(("compose logs", (logs.stdout + logs.stderr)[-30000:]))
    return report


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
