"""What a workload reports: one figure, with what it was measured over."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from bench.timing import Measured

Status = Literal["ok", "skipped", "error"]


class Result(msgspec.Struct, kw_only=True):
    """One figure: `value` `unit` over `n` operations in `seconds`, plus whatever else helps
    to read it (`extra`). A skipped or failed workload has no value and says why."""

    name: str
    value: float | None
    unit: str
    n: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    status: Status = "ok"
    reason: str | None = None
    target: float | None = None

    @property
    def passed(self) -> bool | None:
        """True or False against the target; None when there is no target or no figure."""
        if self.target is None or self.value is None:
            return None
        return self.value >= self.target


class Ratio(msgspec.Struct, kw_only=True):
    """One figure divided by another from the same run, with how it was formed."""

    name: str
    value: float | None
    target: float | None
    how: str
    reason: str | None = None

    @property
    def passed(self) -> bool | None:
        """True or False against the target; None when either side is missing."""
        if self.target is None or self.value is None:
            return None
        return self.value >= self.target


class Skipped(Exception):
    """Raised by a workload that cannot run here; the message says why."""


def rate(name: str, n: int, m: Measured, unit: str, **extra: Any) -> Result:
    """A throughput figure: n operations over the measured span, with where the CPU went."""
    extra["client_cpu_us_per_op"] = round(m.client_cpu / n * 1e6, 1)
    if m.server_cpu is not None:
        extra["server_cpu_us_per_op"] = round(m.server_cpu / n * 1e6, 1)
        # CPU that was neither ours nor the server's: other work disturbing the figure.
        other = m.machine_cpu - m.client_cpu - m.server_cpu
        extra["other_busy_cores"] = round(max(other, 0.0) / m.seconds, 2)
    extra["machine_busy_cores"] = round(m.machine_cpu / m.seconds, 2)
    return Result(name=name, value=n / m.seconds, unit=unit, n=n, seconds=m.seconds, extra=extra)
