#!/usr/bin/env bash
# Run the Toxiproxy compatibility suites against a real Toxiproxy: start SERVER on a free
# port, point WARREN_TOXIPROXY_URL at it, run pytest with the remaining arguments, stop it.
# Usage: run.sh SERVER PYTHON [pytest args...]
set -euo pipefail
server=${1:?usage: run.sh SERVER PYTHON [pytest args]}
python=${2:?usage: run.sh SERVER PYTHON [pytest args]}
shift 2
port=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
"$server" -host 127.0.0.1 -port "$port" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"' EXIT
url="http://127.0.0.1:$port"
"$python" - "$url" <<'PY'
import sys, time, urllib.request
deadline = time.monotonic() + 20
while True:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/version", timeout=1) as resp:
            print("Toxiproxy answering:", resp.read().decode().strip())
            break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("Toxiproxy did not answer within 20 s")
        time.sleep(0.1)
PY
WARREN_TOXIPROXY_URL="$url" "$python" -m pytest "$@" || { tail -20 "$log"; exit 1; }
