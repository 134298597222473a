"""The original incident and its relatives, on the compose stack, on a real Docker engine.

Every scenario puts load on the api (HTTP, as its clients do), does something to a container
that an outage or an operator does, and counts at the fake provider: every message the api
accepted (202 "queued") must be delivered; duplicates may only be of accepted ones. Run in
file order on one stack (``make container-test``); each leaves it healthy for the next.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from tests.containers.stack import (
    EXTRA_LABEL,
    PROJECT,
    PROMETHEUS,
    PROVIDER,
    WARREN_IMAGE,
    get_json,
    metric,
    wait_until,
)
from tests.containers.traffic import Load, reset_provider, settled
from tests.support.container_tools import PARTITION, ROOT

if TYPE_CHECKING:
    from collections.abc import Callable

    from tests.containers.stack import Stack

# the function's own time: the stack's set-up (from nothing: debootstrap, builds, up) is
# bounded by each step's own timeout, and counted apart
pytestmark = pytest.mark.timeout(300, func_only=True)
CUT_S = 20
HEARTBEAT_S = 5  # compose.yaml's WARREN_HEARTBEAT: a silent cut is noticed within 2x + 1 s
API_BACKOFF_CAP_S = 5  # compose.yaml's WARREN_BACKOFF_CAP for the api; the push-sender: 15
HEALTHCHECK_CONTAINER = "warren-healthcheck-test"


def _ready(stack: Stack) -> None:
    """Both workers healthy and connected (what an earlier failure left is healed first),
    every earlier push settled (the provider's count still for 3 s), its record empty."""
    stack.up()
    for service in ("api", "push-sender"):
        wait_until(f"{service} connected", _connected(service), 60)
    counts: list[int] = []

    def still() -> bool:
        counts.append(get_json(f"{PROVIDER}/received?ids=0")["count"])
        return len(counts) > 6 and len(set(counts[-7:])) == 1

    wait_until("the provider's count settles", still, 60)
    reset_provider()


def _connected(service: str) -> Callable[[], bool]:
    return lambda: metric(service, "warren_connection_up") == 1


def _reconnected(service: str, before: float) -> Callable[[], bool]:
    def check() -> bool:
        return metric(service, "warren_reconnects_total") > before and _connected(service)()

    return check


def _reconnects_in_prometheus(stack: Stack, worker: str) -> float:
    value = stack.prometheus(f'sum(warren_reconnects_total{{job="warren",worker="{worker}"}})')
    return value or 0.0


def _prometheus_sees(stack: Stack, worker: str, above: float) -> float:
    """Wait until Prometheus (scraping every 15 s) holds more reconnects than ``above``."""
    wait_until(
        f"Prometheus counts {worker}'s reconnect",
        lambda: _reconnects_in_prometheus(stack, worker) > above,
        60,
        every=1,
    )
    return _reconnects_in_prometheus(stack, worker) - above


def _detect(service: str, since: float, within: float = 30) -> float:
    """Seconds from ``since`` until the service's worker says it lost its connection."""
    wait_until(
        f"{service} notices the cut",
        lambda: metric(service, "warren_connection_up") == 0,
        within,
        every=0.2,
    )
    return time.monotonic() - since


def test_the_image_runs_unprivileged_without_a_compiler(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """Non-root (uid 10001), no compiler in it, and its size reported."""
    run = stack.engine.run
    uid = run("run", "--rm", "--entrypoint", "id", WARREN_IMAGE, "-u").stdout.strip()
    compilers = run(
        "run",
        "--rm",
        "--entrypoint",
        "python",
        WARREN_IMAGE,
        "-c",
        "import shutil; print(' '.join(c for c in ('gcc', 'cc', 'c++', 'clang', "
        "'x86_64-linux-gnu-gcc', 'make') if shutil.which(c)))",
    ).stdout.strip()
    size = int(run("image", "inspect", "-f", "{{.Size}}", WARREN_IMAGE).stdout)
    services = [
        line.split()[0]
        for line in run("run", "--rm", WARREN_IMAGE, "services").stdout.splitlines()
        if line.strip()
    ]
    report(
        f"scenario=image uid={uid} compilers={compilers or 'none'} "
        f"size_mb={size / 1e6:.0f} services={','.join(services)}"
    )
    assert uid == "10001"
    assert compilers == ""
    assert {"api", "push-sender", "fake-push-provider"} <= set(services)
    assert size < 400e6


def test_the_incident_partition_sh_cuts_the_api_off_and_nothing_is_lost(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """The seed's incident: deploy/chaos/partition.sh, unchanged, under its own load, cuts the
    api off the broker network for 20 s with ``docker network disconnect``. Meanwhile this
    test watches the api's metrics (when it noticed, when it was back) and afterwards asks
    Prometheus for the reconnect and the buffer's peak."""
    _ready(stack)
    before = _reconnects_in_prometheus(stack, "api")
    proc = subprocess.Popen(
        [str(PARTITION), str(CUT_S)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=stack.env,
    )
    lines: list[str] = []
    cut_at = threading.Event()
    cut_time: list[float] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("disconnecting"):
                cut_time.append(time.monotonic())
                cut_at.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert cut_at.wait(30), "\n".join(lines)
        detection = _detect("api", cut_time[0])
        back = (
            wait_until(
                "the api reconnects",
                lambda: metric("api", "warren_connection_up") == 1,
                CUT_S + 40,
                every=0.2,
            )
            + detection
        )
        status = proc.wait(timeout=200)
    finally:
        if proc.poll() is None:  # SIGTERM: the script's own trap connects the api again
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
    output = "\n".join(lines)
    assert status == 0, output
    posted = re.search(r"posted (\d+): queued (\d+), dropped (\d+), refused (\d+)", output)
    delivered = re.search(r"delivered (\d+) of \d+ queued \(the provider counts (\d+) dup", output)
    assert posted and delivered, output
    queued, got, dups = int(posted[2]), int(delivered[1]), int(delivered[2])
    reconnects = _prometheus_sees(stack, "api", before)
    peak = stack.prometheus('max_over_time(warren_buffer_depth{job="warren",worker="api"}[2m])')
    depth = metric("api", "warren_buffer_depth")
    report(
        f"scenario=api-partition accepted={queued} delivered={got} lost={queued - got} "
        f"duplicates={dups} dropped={posted[3]} refused={posted[4]} cut_s={CUT_S} "
        f"detection_s={detection:.1f} back_after_cut_s={back - CUT_S:.1f} "
        f"prometheus_reconnects={reconnects:g} prometheus_buffer_peak={peak or 0:g} "
        f"buffer_after={depth:g}"
    )
    assert queued > 0 and got == queued and int(posted[3]) == int(posted[4]) == 0
    assert detection <= 2 * HEARTBEAT_S + 2, "noticed later than the heartbeat allows"
    assert back - CUT_S <= API_BACKOFF_CAP_S + 3, "back later than the backoff cap allows"
    assert depth == 0
    assert reconnects >= 1
    assert peak is not None and peak > 0, "Prometheus never saw the buffer hold the cut's jobs"


def test_the_push_sender_cut_off_catches_up_and_nothing_is_lost(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """The consumer side: the push-sender cut off the broker for 20 s while the api keeps
    accepting; the pushes wait in RabbitMQ and go out once it is back."""
    _ready(stack)
    before = _reconnects_in_prometheus(stack, "push-sender")
    with Load() as load:
        time.sleep(3)  # load before the cut (the test's own pacing, not a synchronisation)
        stack.disconnect("push-sender")
        cut = time.monotonic()
        try:
            detection = _detect("push-sender", cut)
            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut)))
        finally:
            stack.connect("push-sender")
        back = wait_until(
            "the push-sender reconnects",
            lambda: metric("push-sender", "warren_connection_up") == 1,
            60,
            every=0.2,
        )
        time.sleep(3)
    t = settled(load)
    reconnects = _prometheus_sees(stack, "push-sender", before)
    report(
        f"scenario=push-sender-partition {t.line()} strays={t.strays} refused={load.refused} "
        f"cut_s={CUT_S} detection_s={detection:.1f} back_after_cut_s={back:.1f} "
        f"prometheus_reconnects={reconnects:g}"
    )
    assert t.accepted > 0 and t.lost == 0 and t.strays == 0
    assert detection <= 2 * HEARTBEAT_S + 2
    assert load.refused == load.dropped == 0  # the api never noticed


def test_the_broker_restarted_every_service_reconnects_by_itself(
    stack: Stack, report: Callable[[str], None]
) -> None:
    _ready(stack)
    reconnects = {s: metric(s, "warren_reconnects_total") for s in ("api", "push-sender")}
    with Load() as load:
        time.sleep(3)
        start = time.monotonic()
        stack.engine.run("restart", "-t", "30", stack.container("rabbitmq"), timeout=120)
        restarted = time.monotonic() - start
        for service, before in reconnects.items():
            wait_until(f"{service} reconnects", _reconnected(service, before), 90)
        back = time.monotonic() - start
        time.sleep(3)
    t = settled(load)
    report(
        f"scenario=broker-restart {t.line()} strays={t.strays} dropped={load.dropped} "
        f"refused={load.refused} restart_s={restarted:.1f} all_back_s={back:.1f}"
    )
    assert t.accepted > 0 and t.lost == 0 and t.strays == 0
    assert restarted < 25, "RabbitMQ did not stop within docker's grace: it was killed"


def test_the_api_stopped_mid_load_and_started_again_loses_nothing(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """``docker stop``: SIGTERM, the api stops taking requests and flushes, exits 0; then
    ``docker start`` on the same volume."""
    _ready(stack)
    with Load() as load:
        time.sleep(3)
        start = time.monotonic()
        stack.engine.run("stop", "-t", "30", stack.container("api"), timeout=60)
        stopped = time.monotonic() - start
        code = stack.engine.run(
            "inspect", "-f", "{{.State.ExitCode}}", stack.container("api")
        ).stdout.strip()
        stack.engine.run("start", stack.container("api"))
        healthy = stack.wait_healthy("api")
        time.sleep(3)
    t = settled(load)
    report(
        f"scenario=api-stop-start {t.line()} strays={t.strays} refused_while_down="
        f"{load.refused} exit_code={code} stop_s={stopped:.1f} healthy_after_start_s="
        f"{healthy:.1f}"
    )
    # a message stored just before the stop whose answer never came out is delivered unasked
    assert t.accepted > 0 and t.lost == 0 and t.strays <= load.unanswered
    assert code == "0"


def test_the_api_killed_with_jobs_in_its_outbox_sends_them_after_the_start(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """``docker kill`` (SIGKILL) while the api is cut off from the broker, so the jobs it
    accepted are only in its outbox, on the volume; started again (and reconnected), it
    finds them there and sends them."""
    _ready(stack)
    with Load() as load:
        time.sleep(2)
        stack.disconnect("api")
        try:
            _detect("api", time.monotonic())
            wait_until(
                "jobs wait in the outbox", lambda: metric("api", "warren_outbox_jobs") >= 50, 30
            )
            waiting = metric("api", "warren_outbox_jobs")
            stack.engine.run("kill", stack.container("api"))
        finally:
            stack.connect("api")
        stack.engine.run("start", stack.container("api"))
        stack.wait_healthy("api")
        recovered = metric("api", "warren_outbox_recovered_total")
        time.sleep(3)
    t = settled(load)
    report(
        f"scenario=api-kill-start {t.line()} strays={t.strays} refused_while_down="
        f"{load.refused} outbox_at_kill>={waiting:g} recovered={recovered:g}"
    )
    assert t.accepted > 0 and t.lost == 0 and t.strays <= load.unanswered
    assert recovered >= waiting


def test_the_healthcheck_follows_the_process_and_the_worker_that_fails_for_good_ends_it(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """A container of the image, with the image's own HEALTHCHECK command (polled every
    second here), logs in as a broker user of its own. Healthy; then its process frozen
    (SIGSTOP: running, answering nothing) the probe itself fails and it turns unhealthy;
    thawed, healthy again. Then the user is deleted: the broker closes the connection and
    refuses the next login, the worker has failed for good, the process exits 4 (Docker
    marks an ended container unhealthy; the restart policy is what acts on it)."""
    ctl = ("exec", stack.container("rabbitmq"), "rabbitmqctl", "-q")
    name = HEALTHCHECK_CONTAINER
    stack.engine.run("rm", "-f", name, check=False)  # an interrupted run's
    stack.engine.run(*ctl, "delete_user", "healthcheck", check=False)
    stack.engine.run(*ctl, "add_user", "healthcheck", "healthcheck-pw")
    stack.engine.run(*ctl, "set_permissions", "healthcheck", ".*", ".*", ".*")
    run = stack.engine.run

    def state() -> str:
        fmt = "{{.State.Status}}/{{.State.Health.Status}}/{{.State.ExitCode}}"
        return run("inspect", "-f", fmt, name).stdout.strip()

    def probes() -> list[int]:
        log = run("inspect", "-f", "{{json .State.Health.Log}}", name).stdout
        return [entry["ExitCode"] for entry in json.loads(log) or []]

    try:
        run(
            "run", "-d", "--name", name, "--network", stack.network("broker"),
            # Stack.down() removes it if this cannot; leftovers() sees it by the project's
            "--label", EXTRA_LABEL, "--label", f"com.docker.compose.project={PROJECT}",
            "--health-interval", "1s", "--health-retries", "1", "--health-timeout", "10s",
            "--health-start-period", "0s",
            "-e", "WARREN_AMQP_URL=amqp://healthcheck:healthcheck-pw@rabbitmq:5672/%2F",
            WARREN_IMAGE, "run", "api",
        )  # fmt: skip
        healthy = wait_until("healthy", lambda: state() == "running/healthy/0", 60, every=0.2)
        assert 0 in probes()
        run("kill", "--signal", "STOP", name)
        frozen = wait_until("unhealthy while frozen", lambda: state() == "running/unhealthy/0",
                            30, every=0.2)  # fmt: skip
        failed_probes = sum(code != 0 for code in probes())
        run("kill", "--signal", "CONT", name)
        thawed = wait_until("healthy again", lambda: state() == "running/healthy/0", 30,
                            every=0.2)  # fmt: skip
        start = time.monotonic()
        run(*ctl, "delete_user", "healthcheck")
        wait_until("the process ends", lambda: state().startswith("exited/"), 60, every=0.2)
        ended = time.monotonic() - start
        final = state()
        logs = run("logs", name)
    finally:
        run("rm", "-f", name, check=False)
        run(*ctl, "delete_user", "healthcheck", check=False)
    report(
        f"scenario=healthcheck healthy_s={healthy:.1f} unhealthy_when_frozen_s={frozen:.1f} "
        f"failed_probes={failed_probes} healthy_when_thawed_s={thawed:.1f} "
        f"exit_after_revoke_s={ended:.1f} final={final}"
    )
    assert failed_probes >= 1
    assert final == "exited/unhealthy/4", logs.stdout + logs.stderr
    assert "worker.failed access refused" in logs.stderr
    assert "healthcheck-pw" not in logs.stdout + logs.stderr


def test_the_dashboard_and_the_alerts_work_on_the_live_prometheus(
    stack: Stack, report: Callable[[str], None]
) -> None:
    """Grafana has no Debian package, so there is no Grafana here; its dashboard is checked
    the other way round: every panel's query, with the variables as Grafana fills them (All
    workers, a 1 m rate interval), runs on the stack's Prometheus over the scenarios' last
    fifteen minutes. Each must be valid; the panels the scenarios exercised must show data. And
    Prometheus loaded every alert rule of deploy/prometheus/alerts.yml, each evaluating."""
    dashboard = json.loads((ROOT / "deploy/grafana/warren.json").read_text())
    end = time.time()
    empty: list[str] = []
    queries = 0
    for panel in dashboard["panels"]:
        shown = False  # a value other than 0 in any of the panel's series
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$worker", ".*").replace("$__rate_interval", "1m")
            query = urllib.parse.urlencode(
                {"query": expr, "start": end - 900, "end": end, "step": 15}
            )
            answer = get_json(f"{PROMETHEUS}/api/v1/query_range?{query}")
            assert answer["status"] == "success", (expr, answer)
            queries += 1
            values = [float(v) for series in answer["data"]["result"] for _, v in series["values"]]
            shown |= any(v != 0 for v in values if v == v)  # NaN (no rate yet) is not data
        if not shown:
            empty.append(panel["title"])
    rules = get_json(f"{PROMETHEUS}/api/v1/rules")["data"]["groups"]
    loaded = [r for g in rules for r in g["rules"]]
    unhealthy = [r["name"] for r in loaded if r.get("health") != "ok"]
    report(
        f"scenario=dashboard queries={queries} panels={len(dashboard['panels'])} "
        f"panels_without_data={len(empty)} alert_rules={len(loaded)} "
        f"rules_not_ok={len(unhealthy)}"
    )
    # what the scenarios did must show (a value other than 0): buffering, the cuts, jobs,
    # latencies, outcomes; and each worker's reconnects (a counter: no scrape can miss it)
    for title in dashboard_titles_with_data():
        assert title not in empty, f"panel {title!r} shows nothing after the scenarios"
    window = "[15m]"
    for worker in ("api", "push-sender"):
        assert (stack.prometheus(f'increase(warren_reconnects_total{{worker="{worker}"}}{window})')
                or 0) > 0  # fmt: skip
    assert (
        stack.prometheus(f'max_over_time(warren_buffer_depth{{worker="api"}}{window})') or 0
    ) > 0
    expected = re.findall(
        r"^\s+- alert: (\S+)", (ROOT / "deploy/prometheus/alerts.yml").read_text(), re.MULTILINE
    )
    assert sorted(r["name"] for r in loaded) == sorted(expected)
    assert not unhealthy


def dashboard_titles_with_data() -> list[str]:
    """The panels the scenarios exercise. Not "Handlers in flight" (a gauge that is 0
    between deliveries, sampled every 15 s), "Dead letters" or "Confirm timeouts" (nothing
    here causes one)."""
    return [
        "Buffer depth vs capacity",
        "Connection state (1 = up / blocked)",
        "Reconnects",
        "Time disconnected (fraction)",
        "Jobs submitted / confirmed / dropped per second",
        "Confirm latency (submit to broker ack)",
        "Consumer outcomes per second",
        "Handler latency",
    ]
