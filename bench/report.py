"""The report: a rich table on the console, and report.md + report.json (replaced whole)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.table import Table

from bench.registry import WORKLOADS
from bench.result import Ratio, Result

STATISTIC = (
    "Throughput figures of workloads run in rounds are the best round (noise only slows a "
    "round down); every round is listed. The append_single / raw_insert ratio is the mean "
    "of the per-pair ratios, each pair run back to back (raw, append, raw, append)."
)


def _verdict(passed: bool | None, status: str = "ok") -> str:
    if status != "ok":
        return status
    return "-" if passed is None else ("pass" if passed else "FAIL")


def _num(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value:.2f}x" if value >= 2 else f"{value:.3f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"


_CPU_KEYS = (
    "client_cpu_us_per_op",
    "server_cpu_us_per_op",
    "other_busy_cores",
    "machine_busy_cores",
)


def _notes(result: Result) -> str:
    if result.status != "ok":
        return result.reason or ""
    x = result.extra
    parts = []
    if "rounds" in x:
        parts.append("rounds " + " / ".join(_num(v) for v in x["rounds"]))
    cpu = f"cpu/op: client {x['client_cpu_us_per_op']} us" if "client_cpu_us_per_op" in x else ""
    if "server_cpu_us_per_op" in x:
        cpu += f"{', ' if cpu else 'cpu/op: '}server {x['server_cpu_us_per_op']} us"
        if "other_busy_cores" in x:
            cpu += f"; other load {x['other_busy_cores']} cores"
    if cpu:
        parts.append(cpu)
    parts += [f"{k}={v}" for k, v in x.items() if k not in (*_CPU_KEYS, "rounds", "statistic")]
    return "; ".join(parts)


def rows(results: Sequence[Result]) -> list[list[str]]:
    """One row a workload: name, value, unit, target, result, n, seconds, notes."""
    return [
        [r.name, _num(r.value), r.unit, _num(r.target), _verdict(r.passed, r.status),
         f"{r.n:,}" if r.n else "-", f"{r.seconds:.2f}" if r.seconds else "-", _notes(r)]
        for r in results
    ]  # fmt: skip


def ratio_rows(ratios: Sequence[Ratio]) -> list[list[str]]:
    """One row a ratio: name, value, target, result, how it was formed."""
    return [
        [r.name, _num(r.value, "ratio"), _num(r.target, "ratio"), _verdict(r.passed),
         r.how or r.reason or ""]
        for r in ratios
    ]  # fmt: skip


def disturbance(results: Sequence[Result]) -> str | None:
    """A warning when other processes took a noticeable share of the machine."""
    worst = max((float(r.extra.get("other_busy_cores", 0.0)) for r in results), default=0.0)
    if worst < 0.25:
        return None
    return (f"Other processes used up to {worst:.2f} cores during this run (see 'other load' "
            "per workload): throughput figures are low by up to that share; the CPU-per-op "
            "figures and the ratio by CPU per op are hardly affected.")  # fmt: skip


RESULT_HEADER = ["workload", "value", "unit", "target", "result", "n", "seconds", "notes"]
RATIO_HEADER = ["ratio", "value", "target", "result", "how"]


def show(console: Console, results: Sequence[Result], ratios: Sequence[Ratio], facts: dict[str, str]) -> None:  # fmt: skip
    """Print the figures, ratios and machine facts as tables."""
    table = Table(title="Hubbub benchmarks", title_justify="left")
    for col in RESULT_HEADER:
        table.add_column(col, justify="right" if col in ("value", "target", "n", "seconds") else "left",
                         overflow="fold", max_width=60 if col == "notes" else None)  # fmt: skip
    for row in rows(results):
        style = {"FAIL": "red", "error": "red", "skipped": "dim", "pass": "green"}.get(row[4])
        table.add_row(*row, style=style)
    console.print(table)
    if ratios:
        rt = Table(title="Ratios", title_justify="left")
        for col in RATIO_HEADER:
            rt.add_column(col, justify="right" if col in ("value", "target") else "left",
                          overflow="fold")  # fmt: skip
        for row in ratio_rows(ratios):
            rt.add_row(*row, style={"FAIL": "red", "pass": "green"}.get(row[3]))
        console.print(rt)
    mt = Table(title="Machine", title_justify="left", show_header=False)
    for key, value in facts.items():
        mt.add_row(key, value)
    console.print(mt)
    console.print(STATISTIC, style="dim")
    warning = disturbance(results)
    if warning:
        console.print(warning, style="yellow")


def _md_table(header: list[str], body: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, body)])


def markdown(results: Sequence[Result], ratios: Sequence[Ratio], facts: dict[str, str], mode: str) -> str:  # fmt: skip
    """The whole report as Markdown."""
    about = {w.name: w.about for w in WORKLOADS}
    parts = [
        "# Hubbub benchmark report",
        f"Run {facts.get('date', '?')}, {mode} mode. Written by `make bench`; every run replaces it.",
        "## Figures",
        _md_table(RESULT_HEADER, rows(results)),
    ]
    if ratios:
        parts += ["## Ratios", _md_table(RATIO_HEADER, ratio_rows(ratios))]
    warning = disturbance(results)
    parts += [
        "## How it was measured",
        STATISTIC + (f"\n\n**{warning}**" if warning else ""),
        "\n".join(f"- **{r.name}**: {about.get(r.name, '')}" for r in results),
        "## Machine",
        _md_table(["fact", "value"], [[k, v] for k, v in facts.items()]),
    ]
    return "\n\n".join(parts) + "\n"


def to_json(results: Sequence[Result], ratios: Sequence[Ratio], facts: dict[str, str], mode: str) -> bytes:  # fmt: skip
    """The whole report as JSON (figures with their verdicts)."""

    def with_verdict(item: Result | Ratio) -> dict[str, Any]:
        data: dict[str, Any] = msgspec.to_builtins(item)
        data["passed"] = item.passed
        return data

    doc = {
        "mode": mode,
        "statistic": STATISTIC,
        "disturbance": disturbance(results),
        "machine": facts,
        "results": [with_verdict(r) for r in results],
        "ratios": [with_verdict(r) for r in ratios],
    }
    return msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"


def _replace(path: Path, data: bytes) -> None:
    # Write beside and rename, so a crashed run never leaves half a report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write(out: Path, results: Sequence[Result], ratios: Sequence[Ratio], facts: dict[str, str], mode: str) -> None:  # fmt: skip
    """Replace out/report.md and out/report.json."""
    out.mkdir(parents=True, exist_ok=True)
    _replace(out / "report.md", markdown(results, ratios, facts, mode).encode())
    _replace(out / "report.json", to_json(results, ratios, facts, mode))
