"""The ``warren`` command: ``warren run SERVICE``, ``warren services``, ``warren version``,
``warren proxy``, ``warren outbox salvage DAMAGED --to NEW``."""

from __future__ import annotations

import argparse
import os
import sys
from importlib.metadata import entry_points

from warren._config import env_settings_help
from warren._exceptions import ConfigError, OutboxError
from warren._outbox.salvage import EXIT_LOST, salvage
from warren._run.logging import configure_logging
from warren._run.runner import DEFAULT_METRICS_ADDR, EXIT_CONFIG, FORCED_EXIT_AFTER, run_service
from warren._run.service import Service
from warren._version import VERSION

_GROUP = "warren.services"
_EXIT_CODES = """exit codes:
  0  clean shutdown          2  bad configuration or    4  broker refused credentials
  1  unexpected error           a refused topology      5  stopped, unflushed jobs dropped
                             3  gave up reconnecting    6  a TLS certificate refused"""
_SALVAGE_EPILOG = f"""The damaged file (and a WAL beside it) is only read, never changed. Every
job that still reads is copied, with its id and message id, to NEW, a new outbox file: start
the publisher with NEW as its outbox and it sends them (a consumer that deduplicates by
message id drops any it already had). The report names each page or row that did not read.

exit codes:
  0  every page read: all jobs copied
  1  an I/O error reading DAMAGED or writing NEW (the message names the file)
  2  refused, nothing written: a bad argument (named), DAMAGED in use by another process,
     or no outbox in it
  {EXIT_LOST}  the jobs that read were copied; some pages or rows did not (listed as unreadable)"""


def load_services() -> tuple[dict[str, Service], dict[str, str]]:
    """Every service registered in the ``warren.services`` entry-point group.

    Returns the services that load, and for each one that cannot (a dependency is not
    installed) what to install, so ``warren`` can say so instead of printing a traceback.
    """
    found: dict[str, Service] = {}
    missing: dict[str, str] = {}
    for ep in entry_points(group=_GROUP):
        try:
            service = ep.load()
        except ModuleNotFoundError as exc:
            missing[ep.name] = _install_hint(ep.value, exc.name or str(exc))
            continue
        if not isinstance(service, Service):
            raise TypeError(f"entry point {ep.name!r} in {_GROUP} is not a warren.Service")
        found[ep.name] = service
    return dict(sorted(found.items())), dict(sorted(missing.items()))


def _install_hint(target: str, module: str) -> str:
    if target.startswith("warren_services."):
        return f"needs the services extra: pip install 'warren[services]' (no module {module!r})"
    return f"cannot load {target}: no module {module!r}"


def _settings_epilog(services: dict[str, Service]) -> str:
    rows = [*env_settings_help(), ("WARREN_METRICS_ADDR", DEFAULT_METRICS_ADDR)]
    rows.append(("WARREN_LOG_LEVEL", "INFO"))
    rows.append(("WARREN_LOG_FORMAT", "text   (text | json: one JSON object per line)"))
    lines = ["settings (environment, with defaults):"]
    lines += [f"  {var:<32} {default}" for var, default in rows]
    for service in services.values():
        for s in service.settings:
            lines.append(f"  {s.env:<32} {s.default:<12} ({service.name}) {s.help}")
    return "\n".join(lines) + "\n\n" + _EXIT_CODES


def _parser(services: dict[str, Service], missing: dict[str, str]) -> argparse.ArgumentParser:
    rows = [(name, s.help) for name, s in services.items()] + list(missing.items())
    listing = "\n".join(f"  {name:<20} {text}" for name, text in sorted(rows))
    parser = argparse.ArgumentParser(
        prog="warren",
        description="Run Warren services: RabbitMQ side-effect workers that survive outages.",
        epilog=f"services:\n{listing}\n\n{_EXIT_CODES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run one service until it finishes or gets SIGTERM/SIGINT",
        description=f"Run one service.\n\nservices:\n{listing}",
        epilog=_settings_epilog(services),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("service", choices=sorted([*services, *missing]), metavar="SERVICE")
    run.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    proxy = sub.add_parser(
        "proxy",
        help="run a fault-injection TCP proxy with Toxiproxy's HTTP API",
        description="A fault proxy for partition tests; Toxiproxy clients work against it.",
    )
    proxy.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    proxy.add_argument("--port", type=int, default=8474, help="API port (default 8474)")
    proxy.add_argument("--config", help="JSON list of proxies to create, as Toxiproxy's -config")
    outbox = sub.add_parser("outbox", help="outbox maintenance: salvage a damaged outbox")
    tools = outbox.add_subparsers(dest="tool", required=True)
    rescue = tools.add_parser(
        "salvage",
        help="copy every job a damaged outbox still holds to a new outbox file",
        description="Copy every job a damaged outbox file still holds to a new outbox file.",
        epilog=_SALVAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rescue.add_argument("damaged", metavar="DAMAGED", help="the damaged outbox file")
    rescue.add_argument("--to", required=True, metavar="NEW", help="the new file (must not exist)")
    sub.add_parser("services", help="list the services")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: list[str] | None = None) -> int:
    services, missing = load_services()
    args = _parser(services, missing).parse_args(argv)
    if args.command == "version":
        print(VERSION)
        return 0
    if args.command == "services":
        for name, service in services.items():
            print(f"{name}\t{service.help}")
        for name, hint in missing.items():
            print(f"{name}\t({hint})")
        return 0
    if args.command == "outbox":
        return _salvage(args.damaged, args.to)
    try:
        configure_logging(os.environ)
    except ConfigError as exc:
        print(f"warren: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "proxy":
        from warren.testing._proxy_cli import run_proxy

        return run_proxy(args.host, args.port, args.config)
    if args.service in missing:
        print(f"warren: service {args.service!r} {missing[args.service]}", file=sys.stderr)
        return EXIT_CONFIG
    return run_service(services[args.service], os.environ, backend=args.backend,
                       abandon_after=FORCED_EXIT_AFTER)  # fmt: skip


def _salvage(damaged: str, destination: str) -> int:
    try:
        report = salvage(damaged, destination)
    except OutboxError as exc:
        print(f"warren outbox salvage: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # reading DAMAGED or writing NEW: the disk, permissions
        print(f"warren outbox salvage: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0 if report.complete else EXIT_LOST


if __name__ == "__main__":
    raise SystemExit(main())
