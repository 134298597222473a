#!/usr/bin/env bash
# The incident, replayed on the compose stack (deploy/compose.yaml): while clients keep
# posting messages, the api is cut off from RabbitMQ with `docker network disconnect` (no FIN,
# no RST: the silent partition), then connected again. Prints the api's metrics before, during
# and after, waits for its buffer to drain and for the push sender to deliver, and compares
# what the api accepted with what the fake provider received.
#
#   deploy/chaos/partition.sh [SECONDS]         partition length, default 20
#
# Environment (defaults match deploy/compose.yaml's published ports):
#   API_URL           http://127.0.0.1:8080    the api (POST /messages)
#   API_OPS_URL       http://127.0.0.1:9100    the api's /metrics
#   PROVIDER_URL      http://127.0.0.1:8090    the fake push provider (GET /received)
#   RATE              20                       messages posted per second
#   COMPOSE_PROJECT   warren                   the compose project (its `name:`)
#   DRAIN_TIMEOUT     120                      seconds to wait for the drain and the deliveries
#
# Exit codes: 0 nothing lost; 1 a message the api accepted never reached the provider, or
# the api refused or dropped one; 2 usage or set-up problem (the stack is not up).
set -euo pipefail

api_url=${API_URL:-http://127.0.0.1:8080}
ops_url=${API_OPS_URL:-http://127.0.0.1:9100}
provider_url=${PROVIDER_URL:-http://127.0.0.1:8090}
rate=${RATE:-20}
project=${COMPOSE_PROJECT:-warren}
drain_timeout=${DRAIN_TIMEOUT:-120}
duration=${1:-20}

die() {
  echo "partition.sh: $*" >&2
  exit 2
}

[[ $duration =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a whole number > 0, got '$duration'"
[[ $rate =~ ^[1-9][0-9]*$ ]] || die "RATE must be a whole number > 0, got '$rate'"
[[ $drain_timeout =~ ^[1-9][0-9]*$ ]] || die "DRAIN_TIMEOUT must be a whole number > 0"
for tool in docker curl python3; do
  command -v "$tool" >/dev/null || die "needs $tool"
done

# The containers and networks compose made, found by the labels it puts on them.
api=$(docker ps -q --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.service=api")
network=$(docker network ls -q --filter "label=com.docker.compose.project=$project" \
  --filter "label=com.docker.compose.network=broker")
[[ -n $api && $api != *$'\n'* ]] || die "no single running api container in project '$project' (docker compose -f deploy/compose.yaml up -d --wait)"
[[ -n $network && $network != *$'\n'* ]] || die "no network 'broker' in project '$project'"

workdir=$(mktemp -d)
poster=""
disconnected=0

cleanup() {
  if [[ -n $poster ]]; then
    kill "$poster" 2>/dev/null || true
    wait "$poster" 2>/dev/null || true
  fi
  if ((disconnected)); then
    echo "reconnecting the api to the broker network (interrupted)" >&2
    docker network connect --alias api "$network" "$api" || true
  fi
  rm -rf "$workdir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# metric NAME: the api worker's value of NAME, summed over its other labels (0 if absent),
# from the last snapshot taken by `snapshot`.
metric() {
  awk -v name="$1" '
    index($0, name "{") == 1 && index($0, "worker=\"api\"") { sum += $NF; found = 1 }
    END { printf "%.15g\n", found ? sum : 0 }' "$workdir/metrics"
}

snapshot() {
  curl -fsS --max-time 5 "$ops_url/metrics" >"$workdir/metrics" || die "cannot read $ops_url/metrics"
}

show() {
  snapshot
  printf '%-7s connection_up=%s buffer_depth=%s reconnects=%s submitted=%s confirmed=%s dropped=%s disconnected_seconds=%s\n' \
    "$1" "$(metric warren_connection_up)" "$(metric warren_buffer_depth)" \
    "$(metric warren_reconnects_total)" "$(metric warren_jobs_submitted_total)" \
    "$(metric warren_jobs_confirmed_total)" "$(metric warren_jobs_dropped_total)" \
    "$(metric warren_disconnected_seconds_total)"
}

# One POST /messages every 1/RATE s until $workdir/stop exists; one line per answer:
# the body (compact JSON, or empty) then the HTTP status (000: no answer).
post_messages() {
  local i=0 pause
  pause=$(awk -v r="$rate" 'BEGIN { printf "%.3f", 1 / r }')
  while [[ ! -e $workdir/stop ]]; do
    i=$((i + 1))
    curl -s --max-time 5 -w ' %{http_code}\n' -H 'content-type: application/json' \
      -d "{\"from\": \"partition.sh\", \"to\": \"device-$i\", \"text\": \"message $i\"}" \
      "$api_url/messages" >>"$workdir/answers" || true
    sleep "$pause"
  done
}

# Compares the answers with GET /received; prints a summary, exits 0 once every accepted
# message was delivered, 1 while some are missing, 3 if the api refused or dropped any.
tally() {
  curl -fsS --max-time 5 "$provider_url/received" >"$workdir/received" \
    || die "cannot read $provider_url/received"
  python3 - "$workdir/answers" "$workdir/received" "${1:-}" <<'PY'
import json, sys

answers, received, final = sys.argv[1], sys.argv[2], sys.argv[3] == "final"
queued, dropped, refused = [], 0, 0
for line in open(answers):
    body, _, status = line.rstrip("\n").rpartition(" ")
    try:
        doc = json.loads(body) if status == "202" else {}
    except ValueError:
        doc = {}
    if doc.get("push") == "queued":
        queued.append("push-" + doc["id"])  # the job's message_id, the provider's key
    elif doc.get("push") == "dropped":
        dropped += 1
    else:
        refused += 1
got = json.load(open(received))
missing = sorted(set(queued) - set(got["ids"]))
if final:
    print(f"posted {len(queued) + dropped + refused}: queued {len(queued)}, "
          f"dropped {dropped}, refused {refused} (not answered 202)")
    print(f"delivered {len(queued) - len(missing)} of {len(queued)} queued "
          f"(the provider counts {got['duplicates']} duplicate deliveries in all)")
    if missing:
        print(f"LOST {len(missing)}: {' '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}")
sys.exit(1 if missing else 3 if dropped or refused else 0)
PY
}

snapshot
[[ $(metric warren_connection_up) == 1 ]] || die "the api is not connected to RabbitMQ; is the stack up?"

echo "posting $rate messages/s to $api_url/messages"
post_messages &
poster=$!
sleep 3
show before

echo "disconnecting the api from the broker network for ${duration}s"
docker network disconnect "$network" "$api"
disconnected=1
end=$((SECONDS + duration))
while ((SECONDS < end)); do
  step=$((end - SECONDS < 5 ? end - SECONDS : 5))
  sleep "$step"
  show during
done
docker network connect --alias api "$network" "$api"
disconnected=0
echo "reconnected"

sleep 3
touch "$workdir/stop"
wait "$poster"
poster=""

deadline=$((SECONDS + drain_timeout))
until snapshot && [[ $(metric warren_connection_up) == 1 && $(metric warren_buffer_depth) == 0 ]]; do
  ((SECONDS < deadline)) || {
    show after
    echo "the api's buffer did not drain within ${drain_timeout}s" >&2
    exit 1
  }
  sleep 1
done
show after

while true; do
  status=0
  tally || status=$?
  ((status == 1 && SECONDS < deadline)) || break
  sleep 1
done
status=0
tally final || status=$?
case $status in
  0) echo "nothing lost" ;;
  3) echo "nothing accepted was lost, but the api refused or dropped messages" >&2 ;;
  *) echo "messages were lost" >&2 ;;
esac
((status == 0)) || exit 1
