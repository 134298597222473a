"""`make bench`: Warren side by side with its peers, one run, same broker, ratios reported.

1. Publish throughput with publisher confirms: 20,000 messages of 256 bytes, several
   interleaved rounds, median msgs/s. Warren Publisher vs raw pika SelectConnection with
   pipelined confirms (window 1,000) vs aio-pika connect_robust with confirms (window 1,000).
2. select() overhead per item vs a bare receive().
3. Memory per buffered 256-byte job while the broker is unreachable (100,000 jobs).
4. Consumer throughput: pre-filled messages drained with a no-op handler, prefetch 100.
5. API ``POST /messages`` latency, broker link up vs silently blackholed.
6. A three-node cluster with a quorum queue: publish and consume, Warren vs raw pika.
7. How fast a silent partition is noticed (heartbeat 5 s), idle and publishing.
8. Scale: 100,000 buffered jobs flushed after a heal; memory per job at 1,000,000 jobs;
   the services end to end (api -> broker -> push-sender -> fake provider).
9. A payload sweep (256 B to 120 KB): publish and consume vs raw pika and amqplib, MB/s,
   peak RSS against the in-flight window, memory per buffered 16 KB and 64 KB job.
10. TLS: publish and consume over amqps:// vs plain AMQP vs raw pika over the same TLS port
   (a throwaway node with a private CA), 256 B and 64 KB.

Writes the table to docs/benchmarks.md (``--no-write`` to skip).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bench import (
    amqplib_peer,
    api_latency,
    cluster,
    consume,
    detection,
    end_to_end,
    memory,
    publish,
    scale,
    select_overhead,
    sweep,
    tls,
)

if TYPE_CHECKING:
    from collections.abc import Callable

QUEUE = "warren.bench"
SWEEP_ROUNDS = 3


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--cluster-messages", type=int, default=10_000)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    runners: dict[str, Callable[[int, int], float]] = {
        "warren": publish.warren,
        "warren-100": publish.warren_concurrent,
        "warren-outbox": publish.warren_outbox,
        "outbox-normal": publish.warren_outbox_normal,
        "pika": publish.raw_pika,
        "pika-minimal": publish.raw_pika_minimal,
        "aio-pika": publish.aio_pika,
    }
    node_missing = amqplib_peer.unavailable()
    if node_missing is None:
        runners["amqplib"] = publish.amqplib
    else:
        print(node_missing, flush=True)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    pub_cpu: dict[str, list[float]] = {name: [] for name in ("warren", "pika", "amqplib")}
    for r in range(args.rounds):
        for name, run in runners.items():  # interleaved: drift hits every peer alike
            publish.purge(QUEUE)
            counted = len(publish.cpu_us)
            rate = run(args.messages, args.size)
            rates[name].append(rate)
            cost = ""
            if name in pub_cpu and len(publish.cpu_us) > counted:
                pub_cpu[name].append(publish.cpu_us[-1])
                cost = f" {publish.cpu_us[-1]:.1f} µs CPU/msg"
            print(f"round {r + 1} {name:<9} {rate:>9,.0f} msgs/s{cost}", flush=True)
    publish.purge(QUEUE)
    med = {name: statistics.median(v) for name, v in rates.items()}
    pub_cpu_med = {name: statistics.median(v) for name, v in pub_cpu.items() if v}

    consumers: dict[str, Callable[[int], float]] = {
        "warren": consume.warren,
        "warren-dedup": consume.warren_dedup,
        "pika": consume.raw_pika,
        "aio-pika": consume.aio_pika,
    }
    if node_missing is None:
        consumers["amqplib"] = consume.amqplib
    consume_rates: dict[str, list[float]] = {name: [] for name in consumers}
    cpu: dict[str, list[float]] = {name: [] for name in consumers}
    for r in range(args.rounds):
        for name, drain in consumers.items():
            consume.fill(args.messages, args.size)
            rate = drain(args.messages)
            consume_rates[name].append(rate)
            cpu[name].append(consume.cpu_us[-1])
            print(f"round {r + 1} consume {name:<9} {rate:>9,.0f} msgs/s "
                  f"{cpu[name][-1]:.1f} µs CPU/msg", flush=True)  # fmt: skip
    consume.cleanup()
    cmed = {name: statistics.median(v) for name, v in consume_rates.items()}
    cpu_med = {name: statistics.median(v) for name, v in cpu.items()}
    c_pika, c_aio = cmed["warren"] / cmed["pika"], cmed["warren"] / cmed["aio-pika"]

    swept = sweep.measure(SWEEP_ROUNDS, amqplib=node_missing is None)
    clu = cluster.measure(args.cluster_messages, args.size, 3)
    over_tls = tls.measure(3)
    sel = select_overhead.measure()
    mem = memory.measure(100_000, args.size)
    recovery = publish.outbox_recovery(100_000, args.size)
    publish.purge(QUEUE)
    detected = detection.measure()
    heal_seconds, heal_rate = scale.heal_flush(100_000, args.size)
    mem_million = memory.measure(1_000_000, args.size)
    e2e = end_to_end.measure()
    lat = api_latency.measure()
    lat_memory = api_latency.measure(outbox=False)
    pct = api_latency.Latencies.pct
    p99_ratio = pct(lat.down, 99) / pct(lat.up, 99)
    outbox_p99 = pct(lat.up, 99) / pct(lat_memory.up, 99)

    lines = [
        "| benchmark | result | target |",
        "| --- | --- | --- |",
        f"| Warren publisher, confirms | {med['warren']:,.0f} msgs/s, "
        f"{pub_cpu_med['warren']:.1f} µs CPU/msg | |",
        f"| raw pika SelectConnection, pipelined confirms (window 1,000), same messages"
        f" | {med['pika']:,.0f} msgs/s, {pub_cpu_med['pika']:.1f} µs CPU/msg | |",
        f"| raw pika, minimal messages (shared properties, no ids, not mandatory)"
        f" | {med['pika-minimal']:,.0f} msgs/s | |",
        f"| aio-pika connect_robust, confirms (window 1,000) | {med['aio-pika']:,.0f} msgs/s | |",
        f"| **Warren / raw pika** | **{med['warren'] / med['pika']:.2f}x** | >= 0.9x |",
        f"| Warren / raw pika minimal | {med['warren'] / med['pika-minimal']:.2f}x | |",
        f"| **Warren / aio-pika** | **{med['warren'] / med['aio-pika']:.1f}x** | >= 5x |",
        *_amqplib_rows("publisher", med, node_missing, pub_cpu_med),
        f"| Warren, {publish.PRODUCERS} concurrent producers, memory | "
        f"{med['warren-100']:,.0f} msgs/s | |",
        f"| Warren, {publish.PRODUCERS} concurrent producers, outbox (synchronous=full) | "
        f"{med['warren-outbox']:,.0f} msgs/s | |",
        f"| Warren, {publish.PRODUCERS} concurrent producers, outbox (synchronous=normal) | "
        f"{med['outbox-normal']:,.0f} msgs/s | |",
        f"| **outbox / memory**, {publish.PRODUCERS} producers each | "
        f"**{med['warren-outbox'] / med['warren-100']:.2f}x** | >= 0.7x |",
        f"| outbox (synchronous=normal) / memory, {publish.PRODUCERS} producers each | "
        f"{med['outbox-normal'] / med['warren-100']:.2f}x | |",
        f"| outbox ({publish.PRODUCERS} producers) / memory (one producer) | "
        f"{med['warren-outbox'] / med['warren']:.2f}x | |",
        f"| outbox ({publish.PRODUCERS} producers) / raw pika | "
        f"{med['warren-outbox'] / med['pika']:.2f}x | |",
        f"| outbox recovery: 100,000 jobs on disk at start, all confirmed | "
        f"{recovery:.1f} s ({100_000 / recovery:,.0f} jobs/s) | |",
    ]
    lines += [
        f"| Warren consumer, no-op handler, prefetch 100, acked | {cmed['warren']:,.0f} msgs/s, "
        f"{cpu_med['warren']:.1f} µs CPU/msg | |",
        f"| raw pika BlockingConnection.basic_consume | {cmed['pika']:,.0f} msgs/s, "
        f"{cpu_med['pika']:.1f} µs CPU/msg | |",
        f"| aio-pika queue iterator | {cmed['aio-pika']:,.0f} msgs/s, "
        f"{cpu_med['aio-pika']:.1f} µs CPU/msg | |",
        *_amqplib_rows("consumer", cmed, node_missing, cpu_med),
        f"| **Warren consumer / raw pika** | **{c_pika:.2f}x** | >= 2.0x |",
        f"| **Warren consumer / aio-pika** | **{c_aio:.2f}x** | >= 2x |",
        f"| Warren consumer with the Redis deduplication store (claim + mark per message) "
        f"| {cmed['warren-dedup']:,.0f} msgs/s, "
        f"{statistics.median(consume.dedup_round_trips_per_message):.3f} Redis round trips "
        "per message | |",
        f"| **with Redis store / without** | **{cmed['warren-dedup'] / cmed['warren']:.2f}x** "
        "| >= 0.5x |",
    ]
    cp, cc = clu.publish, clu.consume
    lines += [
        f"| 3-node cluster, quorum queue: Warren publisher, confirms | {cp['warren']:,.0f} msgs/s"
        " | |",
        f"| 3-node cluster, quorum queue: raw pika, pipelined confirms | {cp['pika']:,.0f} msgs/s"
        " | |",
        f"| **cluster publish: Warren / raw pika** | **{cp['warren'] / cp['pika']:.2f}x** "
        "| >= 0.9x |",
        f"| 3-node cluster, quorum queue: Warren consumer | {cc['warren']:,.0f} msgs/s | |",
        f"| 3-node cluster, quorum queue: raw pika consumer | {cc['pika']:,.0f} msgs/s | |",
        f"| **cluster consume: Warren / raw pika** | **{cc['warren'] / cc['pika']:.2f}x** "
        "| >= 1.0x |",
        *tls.rows(over_tls),
    ]
    for backend, (bare, sel_ns) in sel.items():
        lines.append(
            f"| select() vs bare receive(), {backend} | {sel_ns:.0f} ns vs {bare:.0f} ns per item"
            f" = **{sel_ns / bare:.2f}x** | <= 2x |"
        )
    lines.append(
        f"| memory per buffered {args.size}-byte job, broker unreachable (100,000 jobs) "
        f"| **{mem:.0f} bytes** | <= 1,024 bytes |"
    )
    for name, xs in (("broker up", lat.up), ("broker link blackholed", lat.down)):
        lines.append(
            f"| API POST /messages, {name} ({len(xs):,} requests) "
            f"| p50 {pct(xs, 50) * 1e3:.2f} ms, p99 {pct(xs, 99) * 1e3:.2f} ms | |"
        )
    lines.append(f"| **API p99 blackholed / p99 up** | **{p99_ratio:.2f}x** | <= 1.2x |")
    up_memory = lat_memory.up
    lines.append(
        f"| API POST /messages, broker up, memory only (WARREN_API_OUTBOX=off) "
        f"| p50 {pct(up_memory, 50) * 1e3:.2f} ms, p99 {pct(up_memory, 99) * 1e3:.2f} ms | |"
    )
    lines.append(
        f"| **API p99 transactional outbox / memory only** | **{outbox_p99:.2f}x** | <= 1.3x |"
    )
    lines.append(detection.row(detected))
    lines += [
        f"| heal -> empty buffer, 100,000 jobs buffered while the link was down "
        f"| {heal_seconds:.1f} s ({heal_rate:,.0f} jobs/s, reconnect included) | |",
        f"| memory per buffered {args.size}-byte job at 1,000,000 jobs | **{mem_million:.0f} "
        f"bytes** | <= the 100,000-job figure ({mem:.0f}) |",
        *end_to_end.rows(e2e),
    ]
    table = "\n".join(lines) + "\n\n" + _SWEEP_INTRO + "\n\n" + sweep.table(swept)
    print()
    print(table)
    if not args.no_write:
        _write(table, args)
    return 0


_SWEEP_INTRO = (
    "Payload sweep: the same publish and consume runs at each size, "
    f"median of {SWEEP_ROUNDS} interleaved rounds (messages per round: "
    + ", ".join(f"{n:,} at {sweep.size_name(size)}" for size, n in sweep.SIZES)
    + "). *Peak RSS growth*: the kernel's high-water mark of the benchmark process's resident "
    "memory during Warren's publishing run, minus its RSS just before (the messages share one "
    "body, so what grows is Warren's own copies); the in-flight window is `max_in_flight` "
    "(1,000) jobs' payloads, capped by `buffer_max_bytes` (64 MiB), which counts jobs in "
    "flight. *Memory per buffered job*: as for 256 bytes above, a distinct payload per job."
)


def _amqplib_rows(
    what: str, med: dict[str, float], missing: str | None, cpu: dict[str, float] | None = None
) -> list[str]:
    if missing is not None:
        return [f"| Node amqplib {what} | skipped: {missing} | |"]
    cost = f", {cpu['amqplib']:.1f} µs CPU/msg" if cpu else ""
    return [
        f"| Node amqplib {amqplib_peer.VERSION} {what} | {med['amqplib']:,.0f} msgs/s{cost} | |",
        f"| **Warren {what} / amqplib** | **{med['warren'] / med['amqplib']:.2f}x** | >= 1.0x |",
    ]


def _write(table: str, args: argparse.Namespace) -> None:
    """Rewrite the generated part of docs/benchmarks.md; keep its hand-written sections
    (everything from the first ``## `` heading on)."""
    doc = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
    old = doc.read_text() if doc.exists() else ""
    kept = old[old.index("\n## ") :] if "\n## " in old else ""
    doc.write_text(
        "# Benchmarks\n\n"
        "Reproduce with `make bench` (or `.venv/bin/python -m bench`). Broker: the local "
        "RabbitMQ on 127.0.0.1:5672, same machine, one run, peers interleaved round by round; "
        f"{args.messages:,} messages of {args.size} bytes per round, median of {args.rounds} "
        "rounds. Persistent messages to a non-durable queue, purged between rounds.\n\n"
        f"Machine: {platform.machine()}, {_cores()} cores, Python {sys.version.split()[0]}.\n\n"
        f"{table}\n\n"
        "How each peer publishes:\n\n"
        "- **Warren**: `Publisher.enqueue()` for every message (block policy, buffer 10,000, "
        "`max_in_flight` 1,000), then `wait_flushed()`; pika runs in Warren's I/O thread and "
        "jobs cross the thread boundary in batches.\n"
        "- **raw pika**: one `SelectConnection`, `confirm_delivery`, keeps 1,000 unconfirmed "
        "publishes in flight, refills on each (multiple) ack. *Same messages*: what Warren "
        "sends (a `message_id` per message, content type, persistent, `mandatory`), so the two "
        "do the same work. *Minimal*: one shared properties object, no ids, not mandatory; "
        "the upper bound of pika itself.\n"
        "- **aio-pika**: `connect_robust`, channel with publisher confirms, 1,000 concurrent "
        "`publish()` awaits (semaphore), a `message_id` per message, `mandatory`.\n"
        f"- **Node amqplib {amqplib_peer.VERSION}** (the original API's client, installed by the "
        "bench into `.bench-node/` from the npm registry; skipped when Node.js is absent): a "
        "confirm channel with up to 1,000 unconfirmed publishes, the same message properties "
        "(a 32-character id per message, as Warren's); a child process per round. *CPU/msg*: "
        "the client process's user + system CPU time (every thread) from the first publish "
        "to the last confirm, divided by the messages.\n"
        f"- **Warren, {publish.PRODUCERS} concurrent producers**: the same, from "
        f"{publish.PRODUCERS} tasks each awaiting `enqueue()` in turn (an API's requests); "
        "*memory* is the default buffer, *outbox* puts every job in a SQLite file "
        "(`synchronous=full`: fsynced) before its `enqueue()` returns, the jobs that arrive "
        "during one commit sharing the next (group commit). One producer awaiting each job "
        "alone pays a commit per job (about a thousand a second on this disk).\n"
        "- **Outbox recovery**: 100,000 jobs left in an outbox by a stop that could not reach "
        "the broker; the time from the next publisher's start until the broker confirmed them "
        "all.\n\n"
        "Consumer: a queue pre-filled with the same messages, drained with a no-op handler, "
        "prefetch 100, every message acked; Warren with `concurrency` 100; amqplib acks each "
        "message in its consume callback. *CPU/msg*: the client process's user + system CPU "
        "time (every thread) during the drain, divided by the messages. *With the Redis "
        "deduplication store*: the same Warren consumer with `RedisDedupStore` on the local "
        "Redis (a claim before and a mark after every message: each burst of deliveries is "
        "claimed in one call, the handlers finished meanwhile are marked in one call, and the "
        "calls ready together share one pipelined round trip).\n\n"
        "Cluster: a throwaway three-node cluster on this machine (the test kit's "
        "`RabbitCluster`), a quorum queue led by the node both clients connect to, "
        f"{args.cluster_messages:,} messages per round, median of 3 interleaved rounds; the "
        "same publish and consume runs as above (a confirm now means replicated to a "
        "majority). Three nodes share the machine's cores with the clients.\n\n"
        "TLS: a throwaway node with a TLS listener and a private CA (the test kit's "
        "`RabbitTlsNode`); per round and size (256 B: 20,000 messages, 64 KB: 3,000), Warren "
        "over `amqps://` (`TlsConfig(ca_file=...)`), Warren over the same node's plain port, "
        "and raw pika over `amqps://` with the very same `SSLContext`; the same publish and "
        "consume runs as above, median of 3 interleaved rounds; consume queues are filled over "
        "plain AMQP. The broker encrypts on the same two cores.\n\n"
        "select overhead: 200,000 items through a memory stream, `select(jobs=rx, events=ev)` "
        "(two cases, like the worker loop) vs `await rx.receive()`.\n\n"
        "Memory: tracemalloc delta after submitting 100,000 jobs to a Publisher whose broker "
        "refuses connections, divided by the job count (payload, message id, Job object, its "
        "encoded frames, buffer slot).\n\n"
        "API latency: `warren proxy` in front of the broker, `warren run api` publishing through "
        "it (heartbeat 2 s), requests posted one at a time from the bench process: 300 to warm "
        "up, then with the link up, then while the link is blackholed (no FIN, no RST) for at "
        f"least {api_latency.HEARTBEAT * 3 + 2} s, so the watchdog fires and reconnects fail "
        "while requests keep coming; every push is answered `queued` (buffered). The api "
        "writes each message and its push job in one SQLite transaction (its transactional "
        "outbox, the default); the *memory only* row is the same api with "
        "`WARREN_API_OUTBOX=off` (message stored, then the push buffered in memory).\n\n"
        "Partition noticed: a Warren publisher at heartbeat 5 s behind `warren proxy`, idle or "
        "submitting 200 jobs/s, the link blackholed after a random 1-6 s; the time from the "
        "cut until `statistics().connected` is false (3 rounds each; the promise: "
        "heartbeat + 1 s).\n\n"
        "Scale: *heal -> empty buffer*: a publisher (buffer 100,000) whose proxy link is down "
        "(connections closed, then refused) takes 100,000 jobs, then the link comes back; the "
        "time from the heal until the broker confirmed the last one. *1,000,000 jobs*: the "
        "memory measurement above with ten times the jobs. *End to end*: `warren run api`, "
        f"`push-sender` (concurrency 100) and `fake-push-provider` as processes on the local "
        f"broker, {end_to_end.CLIENTS} HTTP clients in the bench process posting as fast as "
        f"answered for {end_to_end.SECONDS:.0f} s after {end_to_end.WARMUP:.0f} s of warm-up; "
        "CPU per request from each process's user + system time (the broker's Erlang VM "
        "included, and the load generator itself).\n" + kept
    )
    print(f"\nwrote {doc}")


def _cores() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
