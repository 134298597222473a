"""deploy/k8s: the kustomize base renders, every object passes its schema strictly (Kubernetes'
own for the built-in kinds, Warren's own in deploy/schemas for the custom resources, which
catch a misspelled field, a wrong type, a missing required field), and the manifests agree
with the code: settings, services, ports, the alert rules, and the memory and grace-period
arithmetic their comments state."""

from __future__ import annotations

import copy
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
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

# the custom resources the base uses, and Warren's schema of each (under deploy/schemas)
CUSTOM = {
    "RabbitmqCluster": "rabbitmq.com/rabbitmqcluster_v1beta1.json",
    "ScaledObject": "keda.sh/scaledobject_v1alpha1.json",
    "TriggerAuthentication": "keda.sh/triggerauthentication_v1alpha1.json",
    "PodMonitor": "monitoring.coreos.com/podmonitor_v1.json",
    "PrometheusRule": "monitoring.coreos.com/prometheusrule_v1.json",
}
NAMES = {"PodMonitor": "warren"}  # the object a test takes of a kind the base has several of

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
    """Where Warren's schema of a custom resource is (absent for built-in kinds)."""
    api_version: str = obj["apiVersion"]
    kind: str = obj["kind"]
    group, _, version = api_version.rpartition("/")
    return SCHEMAS / group / f"{kind.lower()}_{version}.json"


def crd_errors(obj: Obj, path: Path | None = None) -> list[str]:
    """What Warren's schema for the object (or the one at PATH) finds wrong with it."""
    schema = json.loads((path or crd_schema(obj)).read_text())
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


def test_custom_resources_pass_warrens_schemas(objects: list[Obj]) -> None:
    custom = [o for o in objects if "." in o["apiVersion"].split("/")[0]
              and not o["apiVersion"].split("/")[0].endswith(".k8s.io")]  # fmt: skip
    assert {o["kind"] for o in custom} == set(CUSTOM)
    for obj in custom:
        assert crd_schema(obj).exists(), f"no schema in deploy/schemas for {obj['apiVersion']}"
        assert crd_errors(obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"


def _object_schemas(schema: Any, where: str = "") -> Iterator[tuple[str, Obj]]:
    """Every subschema that describes an object's properties, with where it is (not the
    conditions that only refine one, as in `if`/`then`)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            yield where, schema
        for key, value in schema.items():
            yield from _object_schemas(value, f"{where}/{key}")
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _object_schemas(value, f"{where}/{i}")


def test_schemas_are_valid_strict_pinned_and_documented() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    files = sorted(SCHEMAS.rglob("*.json"))
    assert [p.relative_to(SCHEMAS).as_posix() for p in files] == sorted(CUSTOM.values())
    # written by hand: no converter, and no CRD file of another project to convert
    assert not list(SCHEMAS.rglob("*.py")) and not list(SCHEMAS.rglob("*.yaml"))
    for path in files:
        schema = json.loads(path.read_text())
        jsonschema.Draft7Validator.check_schema(schema)
        assert schema["$schema"] == "http://json-schema.org/draft-07/schema#", path
        described = list(_object_schemas(schema))
        # more than the top level and spec: the fields inside them are described too
        assert len(described) > 3, path
        for where, sub in described:
            assert sub.get("additionalProperties") is False, f"{path.name}{where}: not strict"
        group, version = path.parent.name, path.stem.rpartition("_")[2]
        kind = {v: k for k, v in CUSTOM.items()}[path.relative_to(SCHEMAS).as_posix()]
        assert schema["properties"]["apiVersion"] == {"const": f"{group}/{version}"}, path
        assert schema["properties"]["kind"] == {"const": kind}, path
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(schema["required"]), path
        assert f"`{path.relative_to(SCHEMAS).as_posix()}`" in readme, f"{path}: not in README"


@pytest.mark.parametrize("kind", sorted(CUSTOM))
def test_schemas_pin_api_version_and_kind(objects: list[Obj], kind: str) -> None:
    obj = one(objects, kind, NAMES.get(kind))
    schema = crd_schema(obj)
    other = copy.deepcopy(obj)
    group, _, version = other["apiVersion"].rpartition("/")
    other["apiVersion"] = f"{group}/{version}x"
    assert any("apiVersion" in e for e in crd_errors(other, schema))
    other = copy.deepcopy(obj)
    other["kind"] = kind + "s"
    assert any(e.startswith("kind: ") for e in crd_errors(other, schema))
    for name, path in CUSTOM.items():  # each kind's schema takes that kind only
        assert (crd_errors(obj, SCHEMAS / path) == []) == (name == kind), (kind, name)


def _rename(field: str, to: str) -> Callable[[Obj], None]:
    def mutate(spec: Obj) -> None:
        spec[to] = spec.pop(field)

    return mutate


def _set(**values: Any) -> Callable[[Obj], None]:
    return lambda o: o.update(values)


def _container(obj: Obj) -> Obj:
    container: Obj = obj["spec"]["template"]["spec"]["containers"][0]
    return container


def _term(o: Obj) -> Obj:
    term: Obj = o["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"][0]  # fmt: skip
    return term


def _trigger(o: Obj) -> Obj:
    trigger: Obj = o["spec"]["triggers"][0]
    return trigger


def _endpoint(o: Obj) -> Obj:
    endpoint: Obj = o["spec"]["podMetricsEndpoints"][0]
    return endpoint


def _rule(o: Obj) -> Obj:
    rule: Obj = o["spec"]["groups"][0]["rules"][0]
    return rule


# (kind, what is broken, mutation, the start of an error that must be among those reported,
# "…" standing for any text): for each custom resource at least a misspelled field, a wrong
# type and a missing required field
BROKEN: list[tuple[str, str, Callable[[Obj], None], str]] = [
    ("RabbitmqCluster", "misspelled", lambda o: _rename("replicas", "replica")(o["spec"]),
     "spec: Additional properties are not allowed ('replica' was unexpected)"),
    ("RabbitmqCluster", "misspelled-nested",
     lambda o: _rename("additionalConfig", "additionalconfig")(o["spec"]["rabbitmq"]),
     "spec.rabbitmq: Additional properties are not allowed ('additionalconfig' was"),
    ("RabbitmqCluster", "type", lambda o: _set(replicas="3")(o["spec"]),
     "spec.replicas: '3' is not of type 'integer'"),
    ("RabbitmqCluster", "required", lambda o: _term(o).pop("topologyKey"),
     "spec.affinity.podAntiAffinity.…0: 'topologyKey' is a required property"),
    ("RabbitmqCluster", "negative-replicas", lambda o: _set(replicas=-1)(o["spec"]),
     "spec.replicas: -1 is less than the minimum of 0"),
    ("RabbitmqCluster", "config-not-sysctl", lambda o: _set(
        additionalConfig="cluster_partition_handling: pause_minority\n")(o["spec"]["rabbitmq"]),
     "spec.rabbitmq.additionalConfig: 'cluster_partition_handling: pause_minority\\n' does"),
    ("RabbitmqCluster", "quantity", lambda o: _set(memory="2GB")(o["spec"]["resources"]["limits"]),
     "spec.resources.limits.memory: '2GB' is not valid under any of the given schemas"),
    ("RabbitmqCluster", "selector-operator", lambda o: _term(o)["labelSelector"][
        "matchExpressions"][0].update(operator="in"),
     "spec.affinity.…matchExpressions.0.operator: 'in' is not one of"),
    ("ScaledObject", "misspelled", lambda o: _rename("minReplicaCount", "minReplicas")(o["spec"]),
     "spec: Additional properties are not allowed ('minReplicas' was unexpected)"),
    ("ScaledObject", "misspelled-metadata-key",
     lambda o: _rename("queueName", "queue")(_trigger(o)["metadata"]),
     "spec.triggers.0.metadata: Additional properties are not allowed ('queue' was"),
    ("ScaledObject", "type", lambda o: _set(value=100)(_trigger(o)["metadata"]),
     "spec.triggers.0.metadata.value: 100 is not of type 'string'"),
    ("ScaledObject", "required", lambda o: o["spec"].pop("scaleTargetRef"),
     "spec: 'scaleTargetRef' is a required property"),
    ("ScaledObject", "required-metadata", lambda o: _trigger(o)["metadata"].pop("queueName"),
     "spec.triggers.0.metadata: 'queueName' is a required property"),
    ("ScaledObject", "negative-replicas", lambda o: _set(minReplicaCount=-1)(o["spec"]),
     "spec.minReplicaCount: -1 is less than the minimum of 0"),
    ("ScaledObject", "trigger-type", lambda o: _set(type="rabbitMQ")(_trigger(o)),
     "spec.triggers.0.type: 'rabbitMQ' is not one of ['rabbitmq']"),
    ("ScaledObject", "mode", lambda o: _set(mode="queueLength")(_trigger(o)["metadata"]),
     "spec.triggers.0.metadata.mode: 'queueLength' is not one of"),
    ("ScaledObject", "message-rate-over-amqp",
     lambda o: _set(mode="MessageRate")(_trigger(o)["metadata"]),
     "spec.triggers.0.metadata.protocol: 'amqp' "),
    ("ScaledObject", "policy", lambda o: o["spec"]["advanced"]["horizontalPodAutoscalerConfig"][
        "behavior"]["scaleDown"]["policies"][0].update(type="Pod"),
     "spec.advanced.…scaleDown.policies.0.type: 'Pod' is not one of"),
    ("TriggerAuthentication", "misspelled",
     lambda o: _rename("secretTargetRef", "secretTargetRefs")(o["spec"]),
     "spec: Additional properties are not allowed ('secretTargetRefs' was unexpected)"),
    ("TriggerAuthentication", "type",
     lambda o: _set(secretTargetRef=o["spec"]["secretTargetRef"][0])(o["spec"]),
     "spec.secretTargetRef: {…} is not of type 'array'"),
    ("TriggerAuthentication", "required", lambda o: o["spec"]["secretTargetRef"][0].pop("key"),
     "spec.secretTargetRef.0: 'key' is a required property"),
    ("TriggerAuthentication", "parameter",
     lambda o: o["spec"]["secretTargetRef"][0].update(parameter="hosts"),
     "spec.secretTargetRef.0.parameter: 'hosts' is not one of"),
    ("PodMonitor", "misspelled", lambda o: _rename("relabelings", "relabellings")(_endpoint(o)),
     "spec.podMetricsEndpoints.0: Additional properties are not allowed ('relabellings' was"),
    ("PodMonitor", "type", lambda o: _set(interval=15)(_endpoint(o)),
     "spec.podMetricsEndpoints.0.interval: 15 is not of type 'string'"),
    ("PodMonitor", "required", lambda o: o["spec"].pop("selector"),
     "spec: 'selector' is a required property"),
    ("PodMonitor", "interval", lambda o: _set(interval="15 s")(_endpoint(o)),
     "spec.podMetricsEndpoints.0.interval: '15 s' does not match"),
    ("PodMonitor", "path", lambda o: _set(path="metrics")(_endpoint(o)),
     "spec.podMetricsEndpoints.0.path: 'metrics' does not match"),
    ("PodMonitor", "port-number-as-name", lambda o: _set(port=9100)(_endpoint(o)),
     "spec.podMetricsEndpoints.0.port: 9100 is not of type 'string'"),
    ("PodMonitor", "replace-without-target",
     lambda o: _endpoint(o)["relabelings"][0].pop("targetLabel"),
     "spec.podMetricsEndpoints.0.relabelings.0: 'targetLabel' is a required property"),
    ("PodMonitor", "exists-with-values",
     lambda o: o["spec"]["selector"]["matchExpressions"][0].update(operator="Exists"),
     "spec.selector.matchExpressions.0.values: ["),
    ("PodMonitor", "relabel-action", lambda o: _endpoint(o)["relabelings"][0].update(
        action="rename"), "spec.podMetricsEndpoints.0.relabelings.0.action: 'rename' is not"),
    ("PrometheusRule", "misspelled", lambda o: _rename("expr", "exp")(_rule(o)),
     "spec.groups.0.rules.0: Additional properties are not allowed ('exp' was unexpected)"),
    ("PrometheusRule", "type", lambda o: _set(labels={"severity": 2})(_rule(o)),
     "spec.groups.0.rules.0.labels.severity: 2 is not of type 'string'"),
    ("PrometheusRule", "required", lambda o: o["spec"]["groups"][0].pop("name"),
     "spec.groups.0: 'name' is a required property"),
    ("PrometheusRule", "duration", lambda o: _set(**{"for": "1 minute"})(_rule(o)),
     "spec.groups.0.rules.0.for: '1 minute' does not match"),
    ("PrometheusRule", "alert-and-record", lambda o: _set(record="warren:x")(_rule(o)),
     "spec.groups.0.rules.0: {…} is valid under each of"),
    ("PrometheusRule", "no-rules", lambda o: o["spec"]["groups"][0].update(rules=[]),
     "spec.groups.0.rules: [] "),
    ("StatefulSet", "probe",
     lambda o: _rename("httpGet", "httpGett")(_container(o)["livenessProbe"]),
     "('httpGett' was unexpected)"),
    ("Deployment", "resources",
     lambda o: _container(o)["resources"].update(limit={"memory": "1Gi"}),
     "('limit' was unexpected)"),
]  # fmt: skip


def test_every_custom_kind_has_the_three_basic_breakages() -> None:
    for kind in CUSTOM:
        assert {"misspelled", "type", "required"} <= {what for k, what, _, _ in BROKEN
                                                      if k == kind}, kind  # fmt: skip


@pytest.mark.parametrize(("kind", "what", "mutate", "needle"), BROKEN,
                         ids=[f"{kind}-{what}" for kind, what, _, _ in BROKEN])  # fmt: skip
def test_validation_rejects_a_broken_copy(
    objects: list[Obj], kind: str, what: str, mutate: Callable[[Obj], None], needle: str
) -> None:
    obj = copy.deepcopy(one(objects, kind, NAMES.get(kind)))
    assert errors(obj) == []
    mutate(obj)
    found = errors(obj)
    assert found, f"a {kind} with a {what} mistake passed"
    assert any(_matches(e, needle) for e in found), found


def test_a_long_rabbitmq_conf_with_a_bad_last_line_fails_fast(objects: list[Obj]) -> None:
    """additionalConfig's pattern matches each line one way only: no backtracking blow-up."""
    obj = copy.deepcopy(one(objects, "RabbitmqCluster"))
    obj["spec"]["rabbitmq"]["additionalConfig"] = "log.console.level = info \n" * 5000 + "x: y"
    started = time.monotonic()
    assert any("additionalConfig" in e for e in crd_errors(obj))
    assert time.monotonic() - started < 5


def _matches(error: str, needle: str) -> bool:
    """ERROR is "path: message"; NEEDLE its start, with "…" for any text (a path-less needle
    is found anywhere)."""
    pattern = ".*".join(map(re.escape, needle.split("…")))
    return bool(re.match(pattern, error) if ": " in needle else re.search(pattern, error))


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
