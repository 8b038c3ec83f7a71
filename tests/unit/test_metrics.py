"""Where the processes without an HTTP server serve their metrics."""

from __future__ import annotations

import pytest

from infra.metrics import metrics_port


def test_metrics_ports_follow_one_base() -> None:
    assert metrics_port("relay", {}) == 9100
    assert metrics_port("projector", {}) == 9101
    assert metrics_port("scheduler", {"HUBBUB_METRICS_PORT": "9200"}) == 9202
    assert metrics_port("relay", {"HUBBUB_METRICS_PORT": "0"}) is None
    for bad in ("x", "65535"):
        with pytest.raises(ValueError, match="HUBBUB_METRICS_PORT"):
            metrics_port("scheduler", {"HUBBUB_METRICS_PORT": bad})
