"""The gateway's series: each client op counted under its own name, each server frame type
with a series from the start."""

from __future__ import annotations

import json
from typing import Any, get_args

from prometheus_client import REGISTRY

from read_api.gateway import metrics, protocol

ID = "0192f0c4-5e1a-7c3b-9d2e-4f5a6b7c8d9e"
EXAMPLES: dict[str, dict[str, Any]] = {
    "auth": {"token": "t"},
    "subscribe": {"topic": "me"},
    "unsubscribe": {"topic": "me"},
    "typing": {"channel_id": ID},
    "ping": {},
    "ack": {"channel_id": ID, "message_id": ID},
}


def ops_received(op: str) -> float:
    value = REGISTRY.get_sample_value("hubbub_gateway_ops_received_total", {"op": op})
    assert value is not None, op
    return value


def test_each_op_is_counted_under_its_name() -> None:
    parsed = {name: protocol.parse(json.dumps({"op": name, **f})) for name, f in EXAMPLES.items()}
    assert {type(op) for op in parsed.values()} == set(get_args(protocol.Op))
    for name, op in parsed.items():
        before = {n: ops_received(n) for n in EXAMPLES}
        metrics.received(op)
        assert {n: ops_received(n) - before[n] for n in EXAMPLES} == {
            n: 1.0 if n == name else 0.0 for n in EXAMPLES
        }
    assert ops_received("invalid") >= 0


def test_every_frame_type_has_a_series() -> None:
    assert set(protocol.FRAME_TYPES) == {"authenticated", "subscribed", "unsubscribed", "error",
                                         "pong", "typing", "presence", "event"}  # fmt: skip
    for kind in protocol.FRAME_TYPES:
        labels = {"type": kind}
        assert REGISTRY.get_sample_value("hubbub_gateway_frames_sent_total", labels) is not None
