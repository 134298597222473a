"""Every name deploy/'s container files share with the code, checked (for
tests/repo/test_containers.py): settings, services, ports, mounted files, the service behind each
URL, metric names and endpoints of deploy/Dockerfile, deploy/compose.yaml (as the Compose v2
binary resolves it), the Prometheus and Grafana files it mounts, and deploy/chaos/partition.sh.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.support.container_tools import ROOT, Image, Settings, image

# Ports the third-party images listen on (their documentation's defaults), by image name.
IMAGE_PORTS = {
    "rabbitmq": {5672, 15672, 15692},
    "prom/prometheus": {9090},
    "grafana/grafana": {3000},
}
# The partition script's URLs: which service's listener each default must reach from the host.
SCRIPT_URLS = {
    "API_URL": ("api", "WARREN_API_ADDR"),
    "API_OPS_URL": ("api", "WARREN_METRICS_ADDR"),
    "PROVIDER_URL": ("fake-push-provider", "WARREN_FAKE_PUSH_ADDR"),
}


# Where each URL variable of partition.sh is served, for the paths it requests.
SCRIPT_ENDPOINTS = {
    "api_url": ROOT / "services" / "warren_services" / "api.py",
    "ops_url": ROOT / "runtime" / "warren" / "_ops" / "server.py",
    "provider_url": ROOT / "services" / "warren_services" / "fake_push_provider.py",
}


@dataclass
class _Check:
    model: dict[str, Any]
    image: Image
    settings: Settings
    problems: list[str] = field(default_factory=list)

    @property
    def services(self) -> dict[str, dict[str, Any]]:
        services: dict[str, dict[str, Any]] = self.model["services"]
        return services

    def warren(self, name: str) -> str | None:
        """The Warren service a compose service runs, if it is built from deploy/Dockerfile."""
        spec = self.services[name]
        if spec.get("build", {}).get("dockerfile") != "deploy/Dockerfile":
            return None
        command = spec.get("command") or self.image.cmd
        return str(command[1]) if command[:1] == ["run"] and len(command) > 1 else ""

    def env(self, name: str) -> dict[str, str]:
        given = {k: v for k, v in (self.services[name].get("environment") or {}).items() if v}
        return {**self.settings.defaults, **self.image.env, **given}

    def ports(self, name: str) -> dict[str, int]:
        """Where ``name`` listens inside its container: a setting (or image) -> port."""
        runs = self.warren(name)
        if runs is not None:
            return self.settings.listens(runs, self.env(name))
        image = str(self.services[name].get("image", "")).rpartition(":")[0]
        return {f"{image} {port}": port for port in IMAGE_PORTS.get(image, set())}

    def reach(self, client: str, url: str, where: str) -> None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or {"http": 80, "https": 443, "amqp": 5672}.get(parts.scheme, 0)
        shown = f"{where}: {parts.scheme}://{host}:{port}"
        if host not in self.services:
            self.problems.append(f"{shown}: no service named {host!r}")
        elif not set(self.services[client]["networks"]) & set(self.services[host]["networks"]):
            self.problems.append(f"{shown}: {client} shares no network with {host}")
        elif port not in self.ports(host).values():
            self.problems.append(f"{shown}: {host} listens on {sorted(self.ports(host).values())}")

    def host_path(self, name: str, container_path: str) -> Path | None:
        for mount in self.services[name].get("volumes", []):
            target = mount["target"]
            if mount["type"] == "bind" and (container_path + "/").startswith(target + "/"):
                return Path(mount["source"]) / container_path[len(target) :].lstrip("/")
        self.problems.append(f"{name}: {container_path} is not in any mounted file or folder")
        return None


def reference_problems(
    model: dict[str, Any], dockerfile_text: str, script: str, settings: Settings
) -> list[str]:
    """Every name the container files use that the code or the repository does not have:
    settings, services, ports, mounted files, service names in URLs, metric names."""
    check = _Check(model, image(dockerfile_text), settings)
    _check_image(check)
    for name in check.services:
        _check_service(check, name)
    _check_prometheus(check)
    _check_grafana(check)
    _check_script(check, script)
    return check.problems


def _check_image(check: _Check) -> None:
    img, problems = check.image, check.problems
    for var in img.env:
        if var.startswith("WARREN_") and var not in check.settings.defaults:
            problems.append(f"Dockerfile: ENV {var} is no setting `warren run --help` lists")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    if img.entrypoint[:1] != ["warren"] or "warren" not in scripts:
        problems.append(f"Dockerfile: ENTRYPOINT {img.entrypoint} is not the warren command")
    if img.cmd[:1] != ["run"] or len(img.cmd) < 2 or img.cmd[1] not in check.settings.services:
        problems.append(f"Dockerfile: CMD {img.cmd} runs no service `warren services` lists")
    listening = {int(v.rpartition(":")[2]) for k, v in img.env.items() if k.endswith("_ADDR")}
    if img.expose != listening:
        problems.append(f"Dockerfile: EXPOSE {sorted(img.expose)}, listeners {sorted(listening)}")
    if img.user.split(":")[0] in ("", "0", "root"):
        problems.append(f"Dockerfile: USER {img.user} is root")


def _check_service(check: _Check, name: str) -> None:
    spec, problems = check.services[name], check.problems
    test = (spec.get("healthcheck") or {}).get("test") or ["NONE"]
    if test[0] == "NONE" or (spec.get("healthcheck") or {}).get("disable"):
        problems.append(f"{name}: no health check")
    for dep, how in (spec.get("depends_on") or {}).items():
        if how.get("condition") != "service_healthy":
            problems.append(f"{name}: depends on {dep} without condition service_healthy")
    for mount in spec.get("volumes", []):
        if mount["type"] == "bind" and not Path(mount["source"]).exists():
            problems.append(f"{name}: mounts {mount['source']}, which does not exist")
    for var, value in (spec.get("environment") or {}).items():
        if value and re.match(r"[a-z]+://", value):
            check.reach(name, value, f"{name}: {var}")
    runs = check.warren(name)
    if runs is None:
        return
    if runs not in check.settings.services:
        problems.append(f"{name}: command runs {runs!r}, not a service `warren services` lists")
        return
    if runs != name:  # prometheus.yml and partition.sh find each service by its name
        problems.append(f"{name}: runs {runs}; name the compose service after it")
    for var in spec.get("environment") or {}:
        scope = check.settings.scope.get(var)
        if var.startswith("WARREN_") and scope is None:
            problems.append(f"{name}: {var} is no setting `warren run --help` lists")
        elif scope and runs not in scope:
            problems.append(f"{name}: {var} is a setting of {', '.join(sorted(scope))}")
    listening = check.ports(name)
    for published in spec.get("ports", []):
        if published["target"] not in listening.values():
            problems.append(
                f"{name}: publishes port {published['target']}; it listens on {listening}"
            )
    if test != ["CMD", *check.image.healthcheck]:
        problems.append(f"{name}: its health check is not the image's HEALTHCHECK")


def _service_of(check: _Check, image: str) -> str | None:
    for name, spec in check.services.items():
        if str(spec.get("image", "")).startswith(image + ":"):
            return name
    check.problems.append(f"no service runs {image}")
    return None


def _check_prometheus(check: _Check) -> None:
    name = _service_of(check, "prom/prometheus")
    if name is None:
        return
    flags = dict(f.split("=", 1) for f in check.services[name].get("command") or [] if "=" in f)
    config = check.host_path(name, flags.get("--config.file", "/etc/prometheus/prometheus.yml"))
    if config is None or not config.is_file():
        check.problems.append(f"{name}: no config file at {config}")
        return
    text = config.read_text()
    for targets in re.findall(r"targets:\s*\[([^\]]*)\]", text):
        for target in re.findall(r"[\"']([^\"']+)[\"']", targets):
            check.reach(name, f"http://{target}", f"{config.name}: target")
    block = re.search(r"^rule_files:\n((?:\s+-.*\n)+)", text, re.MULTILINE)
    for rule in re.findall(r"-\s*(\S+)", block[1] if block else ""):
        if not (config.parent / rule).is_file():
            check.problems.append(f"{config.name}: rule file {rule} does not exist")


def _check_grafana(check: _Check) -> None:
    name = _service_of(check, "grafana/grafana")
    if name is None:
        return
    provisioning = check.host_path(name, "/etc/grafana/provisioning")
    if provisioning is None:
        return
    sources = sorted((provisioning / "datasources").glob("*.y*ml"))
    boards = sorted((provisioning / "dashboards").glob("*.y*ml"))
    if not sources or not boards:
        check.problems.append(f"{name}: no datasource or dashboard provisioning in {provisioning}")
    for path in sources:
        for url in re.findall(r"^\s*url:\s*(\S+)", path.read_text(), re.MULTILINE):
            check.reach(name, url, f"{path.name}: url")
    for path in boards:
        for folder in re.findall(r"^\s*path:\s*(\S+)", path.read_text(), re.MULTILINE):
            if not _mounted_dashboards(check, name, folder):
                check.problems.append(f"{path.name}: no dashboard mounted in {folder}")
    home = (check.services[name].get("environment") or {}).get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    )
    found = check.host_path(name, home) if home else None
    if home and (found is None or not found.is_file()):
        check.problems.append(f"{name}: the home dashboard {home} is not mounted")


def _mounted_dashboards(check: _Check, name: str, folder: str) -> list[Path]:
    """The dashboard files a container sees in ``folder``: mounted one by one, or in a
    mounted folder."""
    found: list[Path] = []
    for mount in check.services[name].get("volumes", []):
        source, target = Path(mount["source"]), mount["target"]
        if mount["type"] != "bind":
            continue
        if target.startswith(folder.rstrip("/") + "/") and source.suffix == ".json":
            found += [source] if source.is_file() else []
        elif (folder + "/").startswith(target + "/"):
            found += sorted((source / folder[len(target) :].lstrip("/")).glob("*.json"))
    return found


def _check_script(check: _Check, script: str) -> None:
    problems = check.problems
    defaults = dict(re.findall(r"\$\{([A-Z_]+):-([^}]*)\}", script))
    for var, (service, setting) in SCRIPT_URLS.items():
        url = urlsplit(defaults.get(var, ""))
        if service not in check.services:
            problems.append(f"partition.sh: {var} is for {service}, which compose does not run")
            continue
        port = check.ports(service).get(setting)
        published = {
            int(p["published"])
            for p in check.services[service].get("ports", [])
            if p["target"] == port
        }
        if url.hostname != "127.0.0.1" or url.port not in published:
            problems.append(
                f"partition.sh: {var} {url.geturl()!r} is not {service}'s "
                f"{setting} (container port {port}, published {published})"
            )
    if defaults.get("COMPOSE_PROJECT") != check.model.get("name"):
        problems.append("partition.sh: COMPOSE_PROJECT is not the compose project's name")
    for label in re.findall(r"com\.docker\.compose\.service=([\w-]+)", script):
        if label not in check.services:
            problems.append(f"partition.sh: no compose service {label}")
    brokers = [n for n, s in check.services.items() if str(s.get("image")).startswith("rabbitmq")]
    for net in re.findall(r"com\.docker\.compose\.network=([\w-]+)", script):
        api = set(check.services.get("api", {}).get("networks", {}))
        for broker in brokers:
            shared = api & set(check.services[broker]["networks"])
            if shared != {net}:
                problems.append(
                    f"partition.sh: the api and {broker} share {sorted(shared)}: "
                    f"disconnecting {net} is not a partition"
                )
    for var in sorted(set(re.findall(r"\bWARREN_[A-Z0-9_]+", script))):
        if var not in check.settings.defaults:
            problems.append(f"partition.sh: {var} is no setting `warren run --help` lists")
    metrics = (ROOT / "runtime" / "warren" / "_ops" / "metrics.py").read_text()
    for metric in sorted(set(re.findall(r"\bwarren_[a-z_]+", script))):
        if f'"{metric.removesuffix("_total")}"' not in metrics:
            problems.append(f"partition.sh: no metric {metric} in runtime/warren/_ops/metrics.py")
    for var, path in re.findall(r"\$\{?(api_url|ops_url|provider_url)\}?(/[a-z]+)", script):
        if f'"{path}"' not in SCRIPT_ENDPOINTS[var].read_text():
            problems.append(f"partition.sh: {var} has no {path} ({SCRIPT_ENDPOINTS[var].name})")
