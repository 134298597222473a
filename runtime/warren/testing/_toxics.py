"""Toxics as Toxiproxy defines them: types, attributes, defaults, JSON shape, validation.

Semantics follow Toxiproxy 2 (its README and toxics/*.go); the proxy applies them in
``_proxy.py``. Attribute units: milliseconds unless noted; ``bandwidth.rate`` in KB/s
(1 KB = 1,000 bytes, as Toxiproxy); ``slicer.delay`` in microseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from warren.testing._go_json import Literal as GoNumber
from warren.testing._go_json import go_type

if TYPE_CHECKING:
    from collections.abc import Collection

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
        return {  # in Toxiproxy's key order
            "attributes": dict(self.attributes),
            "name": self.name,
            "type": self.type,
            "stream": self.stream_as_given or self.stream,
            "toxicity": int(self.toxicity) if self.toxicity.is_integer() else self.toxicity,
        }


# type -> (Go struct, Go type of its attributes), as Toxiproxy's errors name them
_GO_STRUCTS = {
    "latency": ("LatencyToxic", "int64"),
    "bandwidth": ("BandwidthToxic", "int64"),
    "timeout": ("TimeoutToxic", "int64"),
    "reset_peer": ("ResetToxic", "int64"),
    "slow_close": ("SlowCloseToxic", "int64"),
    "limit_data": ("LimitDataToxic", "int64"),
    "slicer": ("SlicerToxic", "int"),
    "noop": ("NoopToxic", ""),
}
_INT64 = 2**63


def _go_error(message: str) -> ToxicSpecError:
    return ToxicSpecError(f"bad request body: json: {message}")


def _fields(body: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``body``'s values for ``names``, keys matched as Go's json matches them (exactly, else
    case-insensitively; a later key wins)."""
    out: dict[str, Any] = {}
    for key, value in body.items():
        name = key if key in names else next((n for n in names if n == key.lower()), None)
        if name is not None:
            out[name] = value
    return out


def _check_wrapper(fields: dict[str, Any], owner: str) -> None:
    """Go's type errors for a toxic's own fields, the earliest first."""
    for key, value in fields.items():
        if value is None:
            continue
        if key in ("name", "type", "stream") and not isinstance(value, str):
            raise _go_error(f"cannot unmarshal {go_type(value)} into Go struct field"
                            f" {owner}.{key} of type string")  # fmt: skip
        if key == "toxicity" and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise _go_error(f"cannot unmarshal {go_type(value)} into Go struct field"
                            f" {owner}.toxicity of type float32")  # fmt: skip


def _attributes(kind: str, raw: object, base: dict[str, int], owner: str) -> dict[str, int]:
    """``raw`` over ``base`` with Go's type errors (``owner`` names the attributes field when
    ``raw`` is not an object), then Warren's own: no negative values."""
    struct, int_type = _GO_STRUCTS[kind]
    if raw is None:
        return dict(base)
    if not isinstance(raw, dict):
        raise _go_error(f"cannot unmarshal {go_type(raw)} into Go struct field {owner}")
    out = dict(base)
    for key, value in _fields(raw, tuple(base)).items():  # unknown fields are ignored
        where = f"Go struct field {struct}.attributes.{key} of type {int_type}"
        if value is None:
            continue
        if isinstance(value, GoNumber):
            raise _go_error(f"cannot unmarshal number {value.text} into {where}")
        if isinstance(value, bool) or not isinstance(value, int):
            raise _go_error(f"cannot unmarshal {go_type(value)} into {where}")
        if not -_INT64 <= value < _INT64:
            raise _go_error(f"cannot unmarshal number {value} into {where}")
        out[key] = value
    for key, value in out.items():
        if value < 0:  # Toxiproxy takes these (a negative rate crashes its bandwidth toxic)
            raise ToxicSpecError(f"bad request body: {key} must not be negative")
    return out


def _toxicity(value: object, default: float) -> float:
    if value is None:
        return default
    assert isinstance(value, int | float)
    if not 0.0 <= float(value) <= 1.0:  # Warren's own check: Toxiproxy takes any number
        raise ToxicSpecError("bad request body: toxicity must be between 0 and 1")
    return float(value)


def parse_toxic(body: object, taken: Collection[str] = ()) -> Toxic:
    """Validate a ``POST /proxies/{p}/toxics`` body into a Toxic, checking in Toxiproxy's
    order (its field types, stream, type, a ``taken`` name: 409, the attributes), with
    Toxiproxy's defaults and messages."""
    if not isinstance(body, dict):
        raise _go_error(f"cannot unmarshal {go_type(body)} into Go value of type"
                        " toxics.ToxicWrapper")  # fmt: skip
    fields = _fields(body, ("name", "type", "stream", "toxicity", "attributes"))
    _check_wrapper(fields, "ToxicWrapper")
    raw = fields.get("attributes")
    if raw is not None and not isinstance(raw, dict):
        raise _go_error(f"cannot unmarshal {go_type(raw)} into Go struct field"
                        " ToxicWrapper.attributes of type toxics.NoopToxic")  # fmt: skip
    stream = fields.get("stream")
    if stream is None:
        stream = "downstream"
    if stream.lower() not in ("upstream", "downstream"):  # "" too, as Toxiproxy
        raise ToxicSpecError("stream was invalid, can be either upstream or downstream")
    kind = fields.get("type") or ""
    name = fields.get("name") or f"{kind}_{stream}"
    if kind not in TOXIC_TYPES:
        raise ToxicSpecError("invalid toxic type")
    if name in taken:
        raise ToxicSpecError("toxic already exists", 409)
    struct = _GO_STRUCTS[kind][0]
    attributes = _attributes(kind, raw, TOXIC_TYPES[kind],
                             f"ToxicWrapper.attributes of type toxics.{struct}")  # fmt: skip
    direction: Stream = "upstream" if stream.lower() == "upstream" else "downstream"
    return Toxic(name=name, type=kind, stream=direction,
                 toxicity=_toxicity(fields.get("toxicity"), 1.0),
                 attributes=attributes, stream_as_given=stream)  # fmt: skip


def update_toxic(toxic: Toxic, body: object) -> None:
    """Apply a ``POST /proxies/{p}/toxics/{t}`` body: new attributes and/or toxicity (all
    checked before anything changes)."""
    if not isinstance(body, dict):
        raise _go_error(f"cannot unmarshal {go_type(body)} into Go value of type struct {{"
                        ' Attributes interface {} "json:\\"attributes\\""; Toxicity float32'
                        ' "json:\\"toxicity\\"" }')  # fmt: skip
    fields = _fields(body, ("attributes", "toxicity"))
    _check_wrapper(fields, "")
    struct = _GO_STRUCTS[toxic.type][0]
    attributes = _attributes(toxic.type, fields.get("attributes"), toxic.attributes,
                             f".attributes of type toxics.{struct}")  # fmt: skip
    toxicity = _toxicity(fields.get("toxicity"), toxic.toxicity)
    toxic.attributes = attributes
    toxic.toxicity = toxicity
