"""Toxics as Toxiproxy defines them: types, attributes, defaults, JSON shape, validation.

Semantics follow Toxiproxy 2 (its README and toxics/*.go); the proxy applies them in
``_proxy.py``. Attribute units: milliseconds unless noted; ``bandwidth.rate`` in KB/s
(1 KB = 1,000 bytes, as Toxiproxy); ``slicer.delay`` in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Stream = Literal["upstream", "downstream"]

# type -> attribute -> default
TOXIC_TYPES: dict[str, dict[str, int]] = {
    "latency": {"latency": 0, "jitter": 0},
    "bandwidth": {"rate": 0},
    "timeout": {"timeout": 0},
    "reset_peer": {"timeout": 0},
    "slow_close": {"delay": 0},
    "limit_data": {"bytes": 0},
    "slicer": {"average_size": 0, "size_variation": 0, "delay": 0},
    "noop": {},
}


class ToxicSpecError(ValueError):
    """A toxic request Toxiproxy would refuse; ``status`` is the HTTP status it answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Toxic:
    """One active toxic on a proxy."""

    name: str
    type: str
    stream: Stream
    toxicity: float
    attributes: dict[str, int] = field(default_factory=dict)
    stream_as_given: str = ""  # Toxiproxy reads the stream case-insensitively, shows it as sent

    def attr(self, key: str) -> int:
        return self.attributes[key]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "stream": self.stream_as_given or self.stream,
            "toxicity": int(self.toxicity) if self.toxicity.is_integer() else self.toxicity,
            "attributes": dict(self.attributes),
        }


def _attributes(kind: str, raw: object, base: dict[str, int]) -> dict[str, int]:
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise ToxicSpecError("bad request body: attributes must be an object")
    out = dict(base)
    for key, value in raw.items():
        if key not in out:
            continue  # Toxiproxy (Go's json) ignores unknown fields
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToxicSpecError(
                f"bad request body: json: cannot unmarshal {type(value).__name__} into Go struct"
                f" field {kind}.{key} of type int64"
            )
        if value != int(value):
            raise ToxicSpecError(f"bad request body: {key} must be a whole number")
        if value < 0:
            raise ToxicSpecError(f"bad request body: {key} must not be negative")
        out[key] = int(value)
    return out


def parse_toxic(body: object) -> Toxic:
    """Validate a ``POST /proxies/{p}/toxics`` body into a Toxic (defaults as Toxiproxy's)."""
    if not isinstance(body, dict):
        raise ToxicSpecError("bad request body: expected a JSON object")
    stream = body.get("stream")
    if stream is None:
        stream = "downstream"
    if not isinstance(stream, str):
        kind_of = "number" if isinstance(stream, int | float) else type(stream).__name__
        raise ToxicSpecError(f"bad request body: json: cannot unmarshal {kind_of} into Go"
                             " struct field ToxicWrapper.stream of type string")  # fmt: skip
    if stream.lower() not in ("upstream", "downstream"):  # "" too, as Toxiproxy
        raise ToxicSpecError("stream was invalid, can be either upstream or downstream")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in TOXIC_TYPES:
        raise ToxicSpecError("invalid toxic type")
    name = body.get("name") or f"{kind}_{stream}"
    if not isinstance(name, str):
        raise ToxicSpecError("bad request body: name must be a string")
    toxicity = body.get("toxicity", 1.0)
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        raise ToxicSpecError("bad request body: toxicity must be a number")
    if not 0.0 <= float(toxicity) <= 1.0:
        raise ToxicSpecError("bad request body: toxicity must be between 0 and 1")
    attributes = _attributes(kind, body.get("attributes"), TOXIC_TYPES[kind])
    direction: Stream = "upstream" if stream.lower() == "upstream" else "downstream"
    return Toxic(name=name, type=kind, stream=direction, toxicity=float(toxicity),
                 attributes=attributes, stream_as_given=stream)  # fmt: skip


def update_toxic(toxic: Toxic, body: object) -> None:
    """Apply a ``POST /proxies/{p}/toxics/{t}`` body: new attributes and/or toxicity."""
    if not isinstance(body, dict):
        raise ToxicSpecError("bad request body: expected a JSON object")
    attributes = _attributes(toxic.type, body.get("attributes"), toxic.attributes)
    toxicity = body.get("toxicity", toxic.toxicity)
    if isinstance(toxicity, bool) or not isinstance(toxicity, int | float):
        raise ToxicSpecError("bad request body: toxicity must be a number")
    if not 0.0 <= float(toxicity) <= 1.0:
        raise ToxicSpecError("bad request body: toxicity must be between 0 and 1")
    toxic.attributes = attributes
    toxic.toxicity = float(toxicity)
