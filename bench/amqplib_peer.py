"""Node's amqplib (the original API's client) as a peer: installed from the npm registry into
an ignored folder (``.bench-node/``) on first use, run as a child process per round."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFIX = ROOT / ".bench-node"
SCRIPT = Path(__file__).resolve().parent / "amqplib" / "bench.js"
VERSION = "2.3.1"
URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def unavailable() -> str | None:
    """Why the peer cannot run here (None: it can; installs amqplib if needed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "Node.js (node and npm) is not installed: the amqplib peer is skipped"
    if not (PREFIX / "node_modules" / "amqplib" / "package.json").exists():
        done = subprocess.run(
            ["npm", "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund",
             "--no-save", f"amqplib@{VERSION}"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return f"npm install amqplib@{VERSION} failed: {done.stderr.strip()[-300:]}"
    return None


def _run(*args: str) -> tuple[float, float]:
    env = {**os.environ, "NODE_PATH": str(PREFIX / "node_modules")}
    done = subprocess.run(["node", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=600, check=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return float(result["rate"]), float(result["cpu_us"])


def publish(queue: str, n: int, size: int) -> tuple[float, float]:
    """msgs/s and CPU µs per message, publishing ``n`` with confirms (window 1,000)."""
    return _run("publish", URL, queue, str(n), str(size))


def consume(queue: str, n: int) -> tuple[float, float]:
    """msgs/s and CPU µs per message, draining ``n`` (prefetch 100, each acked)."""
    return _run("consume", URL, queue, str(n))
