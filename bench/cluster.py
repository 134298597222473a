"""Throughput on a three-node cluster with a quorum queue: Warren vs raw pika, same run.

A throwaway ``RabbitCluster`` (the test kit's), a quorum queue led by the node both clients
connect to; publish with confirms (window 1,000) and consume (prefetch 100, each acked),
interleaved rounds, medians. Every publish is replicated to a majority before its confirm,
so these numbers are the cluster's, not one broker's.
"""

from __future__ import annotations

import statistics
import uuid
from dataclasses import dataclass

import pika

from bench import consume, publish
from warren.testing import RabbitCluster


@dataclass(frozen=True)
class ClusterRates:
    publish: dict[str, float]  # median msgs/s per client
    consume: dict[str, float]


def _delete(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_delete(queue)
    conn.close()


def _declare(url: str, queue: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(url))
    conn.channel().queue_declare(queue, durable=True, arguments=publish.QUORUM)
    conn.close()


def measure(n: int, size: int, rounds: int) -> ClusterRates:
    pub: dict[str, list[float]] = {"warren": [], "pika": []}
    con: dict[str, list[float]] = {"warren": [], "pika": []}
    with RabbitCluster() as cluster:
        url = cluster.urls[0]
        for r in range(rounds):
            for name in pub:  # a fresh queue per run: no backlog carried over
                queue = f"warren.bench.cluster.{uuid.uuid4().hex[:6]}"
                _declare(url, queue)
                if name == "warren":
                    rate = publish.warren(n, size, url=url, queue=queue, quorum=True)
                else:
                    rate = publish.raw_pika(n, size, url=url, queue=queue)
                _delete(url, queue)
                pub[name].append(rate)
                print(f"round {r + 1} cluster publish {name:<7} {rate:>9,.0f} msgs/s", flush=True)
            for name in con:
                consume.fill(n, size, url=url, quorum=True)
                if name == "warren":
                    rate = consume.warren(n, url=url, quorum=True)
                else:
                    rate = consume.raw_pika(n, url=url)
                con[name].append(rate)
                print(f"round {r + 1} cluster consume {name:<7} {rate:>9,.0f} msgs/s", flush=True)
            consume.cleanup(url)
    return ClusterRates(
        publish={k: statistics.median(v) for k, v in pub.items()},
        consume={k: statistics.median(v) for k, v in con.items()},
    )
