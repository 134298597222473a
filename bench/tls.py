"""Throughput over TLS: Warren over ``amqps://`` vs Warren over plain AMQP vs raw pika over
the same TLS port, publish and consume, small and large payloads.

A throwaway node (the test kit's ``RabbitTlsNode``: a private CA, a TLS listener next to
the plain one); Warren trusts the CA through ``TlsConfig(ca_file=...)`` and raw pika gets
the very same SSL context, so both pay the same handshake and cipher. Consume queues are
filled over plain AMQP, so only the drain crosses TLS.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench import consume, publish
from warren import TlsConfig
from warren.testing import RabbitTlsNode

# (payload bytes, messages per round)
SIZES = ((256, 20_000), (65_536, 3_000))
PATHS = ("warren-tcp", "warren-tls", "pika-tls")


@dataclass(frozen=True)
class TlsRates:
    """Median msgs/s per (payload size, path) for publish and consume."""

    publish: dict[tuple[int, str], float]
    consume: dict[tuple[int, str], float]
    consume_cpu: dict[tuple[int, str], float]  # the client's CPU µs per message, median


def measure(rounds: int) -> TlsRates:
    pub: dict[tuple[int, str], list[float]] = {}
    con: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    with RabbitTlsNode(verify_clients=False, external=False) as node:
        tls = TlsConfig(ca_file=str(node.ca_file))
        plain, secure = node.url, node.tls_url()
        queue = "warren.bench.tls"
        for r in range(rounds):
            for size, n in SIZES:
                for path in PATHS:  # interleaved: drift hits every path alike
                    publish.purge(queue, url=plain)
                    if path == "warren-tcp":
                        rate = publish.warren(n, size, url=plain, queue=queue)
                    elif path == "warren-tls":
                        rate = publish.warren(n, size, url=secure, queue=queue, tls=tls)
                    else:
                        rate = publish.raw_pika(n, size, url=secure, queue=queue, tls=tls)
                    pub.setdefault((size, path), []).append(rate)
                for path in PATHS:
                    consume.fill(n, size, url=plain)
                    if path == "warren-tcp":
                        rate = consume.warren(n, url=plain)
                    elif path == "warren-tls":
                        rate = consume.warren(n, url=secure, tls=tls)
                    else:
                        rate = consume.raw_pika(n, url=secure, tls=tls)
                    con.setdefault((size, path), []).append(rate)
                    cpu.setdefault((size, path), []).append(consume.cpu_us[-1])
                print(f"round {r + 1} TLS {size:>6} B  publish "
                      + "  ".join(f"{p} {pub[size, p][-1]:,.0f}" for p in PATHS)
                      + "  consume "
                      + "  ".join(f"{p} {con[size, p][-1]:,.0f}" for p in PATHS),
                      flush=True)  # fmt: skip
        consume.cleanup(plain)
    return TlsRates(
        publish={k: statistics.median(v) for k, v in pub.items()},
        consume={k: statistics.median(v) for k, v in con.items()},
        consume_cpu={k: statistics.median(v) for k, v in cpu.items()},
    )


def rows(rates: TlsRates) -> list[str]:
    """Table rows: the rates, then TLS / plain (consume target >= 0.9x) and Warren / raw
    pika over TLS (>= 0.9x, as over plain TCP) for each size and direction."""
    out: list[str] = []
    for what, table in (("publish", rates.publish), ("consume", rates.consume)):
        for size, _n in SIZES:
            name = f"{size} B" if size < 1024 else f"{size // 1024} KB"
            tcp, tls, pika = (table[size, p] for p in PATHS)
            target = ">= 0.9x" if what == "consume" else ""
            out += [
                f"| TLS {what}, {name}: Warren over amqps / Warren over plain AMQP / raw pika "
                f"over amqps | {tls:,.0f} / {tcp:,.0f} / {pika:,.0f} msgs/s | |",
                f"| **TLS {what}, {name}: Warren TLS / plain** | **{tls / tcp:.2f}x** | {target} |",
                f"| **TLS {what}, {name}: Warren / raw pika, both over TLS** "
                f"| **{tls / pika:.2f}x** | >= 0.9x |",
            ]
            if what == "consume":
                c_tls, c_tcp = (
                    rates.consume_cpu[size, "warren-tls"],
                    rates.consume_cpu[size, "warren-tcp"],
                )
                out.append(
                    f"| TLS consume, {name}: Warren's CPU per message, TLS / plain "
                    f"| {c_tls:.1f} / {c_tcp:.1f} µs = {c_tls / c_tcp:.2f}x | |"
                )
    return out


if __name__ == "__main__":  # a quick look without the whole bench
    for line in rows(measure(1)):
        print(line)
