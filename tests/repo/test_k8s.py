"""deploy/k8s: the kustomize base renders, every object passes its schema strictly (Kubernetes'
own for the built-in kinds, the CRD schemas vendored in deploy/schemas for the rest), and the
manifests agree with the code: settings, services, ports, the alert rules, and the memory
and grace-period arithmetic their comments state."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import jsonschema
import pytest
import yaml

from tests.support.helpers import run_warren
from warren import ConnectionConfig, PublisherConfig

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
SCHEMAS = ROOT / "deploy" / "schemas"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
# The oldest Kubernetes the base is for: preStop's `sleep` action is on by default from 1.30.
OLDEST_KUBERNETES = "1.30"
K8S_DEFAULT_GRACE = 30.0  # seconds: terminationGracePeriodSeconds when a pod sets none
CLOSE_GRACE = 0.5  # an unanswered AMQP close handshake is cut after this (operations.md)
MiB = 1024 * 1024
# what selects each service's pods: a typo in a selector leaves them unserved or unprotected
SELECTING = {
    "api": [("StatefulSet", "warren-api"), ("Service", "warren-api"),
            ("Service", "warren-api-pods"), ("PodDisruptionBudget", "warren-api")],
    "push-sender": [("Deployment", "warren-push-sender"),
                    ("PodDisruptionBudget", "warren-push-sender")],
}  # fmt: skip

Obj = dict[str, Any]


def _missing(what: str, install: str) -> NoReturn:
    """A tool the tests need is not installed: a failure in CI, else a skip that says how."""
    message = f"{what} not found ({install})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        _missing("kubectl", "apt-get install kubernetes-client")
    return path


@cache
def _k8s_validate() -> Callable[[Obj, str, bool], str]:
    """kubernetes_validate.validate (untyped, so imported by name)."""
    try:
        module = importlib.import_module("kubernetes_validate")
    except ModuleNotFoundError:
        _missing("kubernetes-validate", "pip install kubernetes-validate")
    validate: Callable[[Obj, str, bool], str] = module.validate
    return validate


def _k8s_latest() -> str:
    _k8s_validate()  # installed, or skip/fail saying how
    versions: list[str] = importlib.import_module("kubernetes_validate.utils").all_versions()
    return versions[-1]


def render() -> list[Obj]:
    done = subprocess.run([_kubectl(), "kustomize", str(K8S)], capture_output=True,
                          text=True, timeout=90, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[Obj]:
    return render()


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def pod_template(objects: list[Obj], service: str) -> Obj:
    """The pod template of the workload that runs `warren run SERVICE`."""
    for o in objects:
        if o["kind"] in ("Deployment", "StatefulSet"):
            template: Obj = o["spec"]["template"]
            if template["spec"]["containers"][0]["args"] == ["run", service]:
                return template
    raise AssertionError(f"no workload runs {service}")


def settings(objects: list[Obj], container: Obj) -> dict[str, str]:
    """A container's WARREN_* environment as the kubelet builds it: envFrom, then env on top
    (values from a Secret are read from the rendered Secret)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = one(objects, "Secret", ref["name"])["stringData"][ref["key"]]
    return env


@cache
def defaults() -> dict[str, str]:
    """Every setting `warren run --help` lists, with its default (the first word)."""
    done = run_warren("run", "--help")
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        if match := re.match(r"\s+(WARREN_[A-Z0-9_]+)(?:\s+(\S+))?", line):
            found.setdefault(match[1], match[2] or "")
    assert "WARREN_AMQP_URL" in found and "WARREN_PUSH_QUEUE_TYPE" in found, done.stdout
    return found


def setting(env: dict[str, str], name: str) -> float:
    return float(env.get(name, defaults()[name]))


def quantity(value: str) -> int:
    """A Kubernetes memory quantity in bytes (the suffixes the base uses)."""
    units = {"Ki": 1024, "Mi": MiB, "Gi": 1024 * MiB, "": 1}
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|)", str(value))
    assert match, f"unexpected quantity {value!r}"
    return int(match[1]) * units[match[2]]


def crd_schema(obj: Obj) -> Path:
    """Where the vendored schema of a custom resource is (absent for built-in kinds)."""
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / group / f"{kind.lower()}_{version}.json"


def crd_errors(obj: Obj) -> list[str]:
    schema = json.loads(crd_schema(obj).read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in
            validator.iter_errors(obj)]  # fmt: skip


def k8s_errors(obj: Obj, version: str) -> list[str]:
    validate = _k8s_validate()
    try:
        validate(obj, version, True)
    except jsonschema.ValidationError as exc:
        return [f"{'.'.join(map(str, exc.absolute_path))}: {exc.message}"]
    return []


def errors(obj: Obj, version: str = OLDEST_KUBERNETES) -> list[str]:
    return crd_errors(obj) if crd_schema(obj).exists() else k8s_errors(obj, version)


# -- rendering and schemas ---------------------------------------------------------------


def test_the_base_renders_every_object(objects: list[Obj]) -> None:
    inventory = sorted((o["kind"], re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"]))
                       for o in objects)  # fmt: skip
    assert inventory == sorted([
        ("Namespace", "warren"), ("Secret", "warren-amqp"), ("ConfigMap", "warren-settings"),
        ("RabbitmqCluster", "warren-rabbitmq"),
        ("StatefulSet", "warren-api"), ("Service", "warren-api"), ("Service", "warren-api-pods"),
        ("PodDisruptionBudget", "warren-api"),
        ("Deployment", "warren-push-sender"), ("PodDisruptionBudget", "warren-push-sender"),
        ("ScaledObject", "warren-push-sender"), ("TriggerAuthentication", "warren-rabbitmq"),
        ("PodMonitor", "warren"), ("PodMonitor", "warren-rabbitmq"), ("PrometheusRule", "warren"),
    ])  # fmt: skip
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == "warren", o["metadata"]


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, "latest"])
def test_builtin_objects_pass_the_kubernetes_schemas_strictly(
    objects: list[Obj], version: str
) -> None:
    version = _k8s_latest() if version == "latest" else version
    builtin = [o for o in objects if not crd_schema(o).exists()]
    assert {o["kind"] for o in builtin} >= {"StatefulSet", "Deployment", "Service", "Secret"}
    for obj in builtin:
        # a kind with no schema raises SchemaNotFoundError: nothing passes unchecked
        assert k8s_errors(obj, version) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_custom_resources_pass_their_vendored_crd_schemas(objects: list[Obj]) -> None:
    custom = [o for o in objects if "." in o["apiVersion"].split("/")[0]
              and not o["apiVersion"].split("/")[0].endswith(".k8s.io")]  # fmt: skip
    assert {o["kind"] for o in custom} == {"RabbitmqCluster", "ScaledObject",
                                          "TriggerAuthentication", "PodMonitor",
                                          "PrometheusRule"}  # fmt: skip
    for obj in custom:
        assert crd_schema(obj).exists(), f"no vendored schema for {obj['apiVersion']}"
        assert crd_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def test_vendored_schemas_are_valid_strict_and_documented() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    files = sorted(SCHEMAS.glob("*/*.json"))
    assert len(files) == 5
    for path in files:
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["additionalProperties"] is False, path
        assert schema["properties"]["spec"]["additionalProperties"] is False, path
        assert f"`{path.relative_to(SCHEMAS)}`" in readme, f"{path.name}: no source in README"


def _rename(field: str, to: str) -> Callable[[Obj], None]:
    def mutate(spec: Obj) -> None:
        spec[to] = spec.pop(field)

    return mutate


def _container(obj: Obj) -> Obj:
    container: Obj = obj["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(
    ("kind", "mutate", "needle"),
    [
        ("RabbitmqCluster", lambda o: _rename("replicas", "replica")(o["spec"]),
         "('replica' was unexpected)"),
        ("RabbitmqCluster", lambda o: o["spec"].update(replicas="3"), "'3' is not of type"),
        ("StatefulSet", lambda o: _rename("httpGet", "httpGett")(_container(o)["livenessProbe"]),
         "('httpGett' was unexpected)"),
        ("Deployment", lambda o: _container(o)["resources"].update(limit={"memory": "1Gi"}),
         "('limit' was unexpected)"),
        ("ScaledObject", lambda o: o["spec"].pop("scaleTargetRef"),
         "'scaleTargetRef' is a required property"),
        ("TriggerAuthentication", lambda o: o["spec"]["secretTargetRef"][0].pop("key"),
         "'key' is a required property"),
        ("PodMonitor", lambda o: _rename("relabelings", "relabellings")(
            o["spec"]["podMetricsEndpoints"][0]), "('relabellings' was unexpected)"),
        ("PrometheusRule", lambda o: _rename("expr", "exp")(o["spec"]["groups"][0]["rules"][0]),
         "('exp' was unexpected)"),
    ],
    ids=["rabbitmq-misspelled", "rabbitmq-type", "statefulset-probe", "deployment-resources",
         "scaledobject-required", "triggerauth-required", "podmonitor-misspelled",
         "prometheusrule-misspelled"],
)  # fmt: skip
def test_validation_rejects_a_broken_copy(
    objects: list[Obj], kind: str, mutate: Callable[[Obj], None], needle: str
) -> None:
    obj = copy.deepcopy(one(objects, kind, None if kind != "PodMonitor" else "warren"))
    assert errors(obj) == []
    mutate(obj)
    found = errors(obj)
    assert found, f"a broken {kind} passed"
    assert any(needle in e for e in found), found


# -- the manifests agree with the code ----------------------------------------------------


def test_prometheusrule_is_alerts_yml(objects: list[Obj]) -> None:
    script = K8S / "gen_prometheusrule.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered = one(objects, "PrometheusRule", "warren")["spec"]["groups"]
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    assert rendered == groups  # as deployed, after kustomize wrote it out again
    assert sum(len(group["rules"]) for group in rendered) == 9


def test_every_setting_is_one_the_code_knows(objects: list[Obj]) -> None:
    known = defaults()
    used: set[str] = set()
    for o in objects:
        if o["kind"] == "ConfigMap":
            used |= set(o["data"])
        if o["kind"] in ("Deployment", "StatefulSet"):
            container = _container(o)
            used |= {var["name"] for var in container.get("env", [])}
    assert used, "no settings found"
    assert sorted(used - known.keys()) == []
    assert all(name.startswith("WARREN_") for name in used)


def test_services_ports_and_references_match(objects: list[Obj]) -> None:
    listed = run_warren("services")
    assert listed.returncode == 0, listed.stderr
    services = {line.split()[0] for line in listed.stdout.splitlines() if line.strip()}
    for service in ("api", "push-sender"):
        assert service in services
        template = pod_template(objects, service)
        container = template["spec"]["containers"][0]
        env = settings(objects, container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert env["WARREN_METRICS_ADDR"] == f"0.0.0.0:{ports['metrics']}"
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert env["WARREN_PUSH_QUEUE"] == "push.notifications"
        assert env["WARREN_PUSH_QUEUE_TYPE"] == "quorum"
        PublisherConfig(
            connection=ConnectionConfig(urls=env["WARREN_AMQP_URL"])
        )  # a URL list Warren accepts
        assert len(env["WARREN_AMQP_URL"].split(",")) == 3, "every RabbitMQ node"
        labels = template["metadata"]["labels"]
        for kind, name in SELECTING[service]:
            selector = one(objects, kind, name)["spec"]["selector"]
            match = selector.get("matchLabels", selector)  # a Service's is the labels itself
            assert match and match.items() <= labels.items(), f"{kind}/{name} misses its pods"
        monitor = one(objects, "PodMonitor", "warren")["spec"]
        assert labels["app.kubernetes.io/name"] in monitor["selector"]["matchExpressions"][0][
            "values"]  # fmt: skip
        assert monitor["podMetricsEndpoints"][0]["port"] in ports
    api = pod_template(objects, "api")["spec"]["containers"][0]
    api_port = {p["name"]: p["containerPort"] for p in api["ports"]}["http"]
    assert settings(objects, api)["WARREN_API_ADDR"] == f"0.0.0.0:{api_port}"
    for name in ("warren-api", "warren-api-pods"):
        assert [p["targetPort"] for p in one(objects, "Service", name)["spec"]["ports"]] == [
            "http"]  # fmt: skip


def test_rabbitmq_podmonitor_selects_the_operators_pods(objects: list[Obj]) -> None:
    cluster = one(objects, "RabbitmqCluster")["metadata"]["name"]
    # the labels and port name the cluster operator gives its pods (internal/metadata/label.go,
    # internal/resource/statefulset.go at v2.22.3)
    labels = {"app.kubernetes.io/name": cluster, "app.kubernetes.io/component": "rabbitmq",
              "app.kubernetes.io/part-of": "rabbitmq"}  # fmt: skip
    spec = one(objects, "PodMonitor", "warren-rabbitmq")["spec"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    jobs = {e["path"]: e["relabelings"][0]["replacement"] for e in spec["podMetricsEndpoints"]}
    assert {e["port"] for e in spec["podMetricsEndpoints"]} == {"prometheus"}
    # the job names alerts.yml's rules filter on
    assert jobs == {"/metrics": "rabbitmq", "/metrics/per-object": "rabbitmq-per-object"}
    assert 'job="rabbitmq-per-object"' in ALERTS.read_text()
    warren = one(objects, "PodMonitor", "warren")["spec"]["podMetricsEndpoints"][0]
    assert warren["relabelings"][0] == {"action": "replace", "targetLabel": "job",
                                        "replacement": "warren"}  # fmt: skip
    assert 'up{job="warren"}' in ALERTS.read_text()


def test_keda_scales_the_push_sender_on_its_queue(objects: list[Obj]) -> None:
    scaled = one(objects, "ScaledObject")["spec"]
    target = scaled["scaleTargetRef"]["name"]
    deployment = one(objects, "Deployment", target)
    assert _container(deployment)["args"] == ["run", "push-sender"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    trigger = scaled["triggers"][0]
    env = settings(objects, _container(deployment))
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == env["WARREN_PUSH_QUEUE"]
    auth = one(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [ref] = auth["spec"]["secretTargetRef"]
    host = one(objects, "Secret", ref["name"])["stringData"][ref["key"]]
    assert ref["parameter"] == "host"
    assert ConnectionConfig(urls=host).urls == (host,), "KEDA takes one URL"
    assert 1 <= scaled["minReplicaCount"] <= scaled["maxReplicaCount"]


def test_rabbitmq_is_a_three_node_cluster_that_pauses_a_minority(objects: list[Obj]) -> None:
    spec = one(objects, "RabbitmqCluster", "warren-rabbitmq")["spec"]
    assert spec["replicas"] == 3
    assert "cluster_partition_handling = pause_minority" in spec["rabbitmq"]["additionalConfig"]
    nodes = [f"warren-rabbitmq-server-{i}.warren-rabbitmq-nodes.warren.svc" for i in range(3)]
    url = settings(objects, pod_template(objects, "api")["spec"]["containers"][0])
    assert [u.split("@")[1].split(":")[0] for u in url["WARREN_AMQP_URL"].split(",")] == nodes


# -- the arithmetic in the manifests' comments ---------------------------------------------


def _documented(path: str, pattern: str) -> float:
    text = re.sub(r"\s+", " ", (ROOT / path).read_text())
    match = re.search(pattern, text)
    assert match, f"{path} no longer says {pattern!r}"
    return float(match[1].replace(",", ""))


def _containers(objects: list[Obj]) -> Iterator[tuple[str, Obj, Obj]]:
    for service in ("api", "push-sender"):
        template = pod_template(objects, service)
        yield service, template["spec"], template["spec"]["containers"][0]


def test_memory_covers_the_buffer(objects: list[Obj]) -> None:
    per_job = _documented(
        "docs/benchmarks.md", r"memory per buffered 256-byte job[^|]*\| \*\*([\d,]+) bytes\*\*"
    )
    baseline = _documented("docs/operations.md", r"the process itself \(~(\d+) MiB\)") * MiB
    for service, _, container in _containers(objects):
        env = settings(objects, container)
        resources = container["resources"]
        request = quantity(resources["requests"]["memory"])
        limit = quantity(resources["limits"]["memory"])
        needed = baseline + setting(env, "WARREN_BUFFER_SIZE") * per_job
        assert request >= needed, f"{service}: request {request} < {needed:.0f}"
        needed = baseline + setting(env, "WARREN_BUFFER_MAX_BYTES")
        assert limit >= needed, f"{service}: limit {limit} < {needed:.0f}"


def test_grace_period_outlasts_the_stop(objects: list[Obj]) -> None:
    http_drain = _documented("services/warren_services/_http.py", r"GRACE: Final = ([\d.]+)")
    for service, pod, container in _containers(objects):
        env = settings(objects, container)
        flush = setting(env, "WARREN_FLUSH_TIMEOUT")
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {})
        if service == "api":
            budget = pre_stop["seconds"] + http_drain + flush + CLOSE_GRACE
        else:
            drain = setting(env, "WARREN_PUSH_SHUTDOWN_TIMEOUT")
            # handlers, then the consumer's re-publisher, then the push-events publisher
            budget = drain + CLOSE_GRACE + 2 * (flush + CLOSE_GRACE)
        grace = pod["terminationGracePeriodSeconds"]
        assert budget + 1 <= grace, f"{service}: stop takes up to {budget} s, grace {grace} s"
        assert budget < K8S_DEFAULT_GRACE, f"{service}: {budget} s"


def test_pods_run_locked_down_and_the_api_outbox_is_per_replica(objects: list[Obj]) -> None:
    for service, pod, container in _containers(objects):
        assert pod["securityContext"]["runAsNonRoot"] is True, service
        assert pod["enableServiceLinks"] is False, service
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, service
        assert context["allowPrivilegeEscalation"] is False, service
    api = one(objects, "StatefulSet", "warren-api")["spec"]
    env = settings(objects, _container({"spec": api}))
    assert env.get("WARREN_API_OUTBOX", defaults()["WARREN_API_OUTBOX"]) == "on"
    db_dir = str(Path(env["WARREN_API_DB"]).parent)
    [mount] = [m for m in _container({"spec": api})["volumeMounts"] if m["mountPath"] == db_dir]
    claims = [t["metadata"]["name"] for t in api["volumeClaimTemplates"]]
    assert mount["name"] in claims, "the api's database must be on its own volume claim"
