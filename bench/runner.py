"""Running the selected workloads (rounds interleaved by group) and forming the ratios."""

from __future__ import annotations

import statistics
import traceback
from collections.abc import Sequence

from rich.console import Console

from bench.context import BenchContext
from bench.registry import RATIOS, RatioSpec, Workload
from bench.result import Ratio, Result, Skipped


def schedule(workloads: Sequence[Workload]) -> list[tuple[Workload, int]]:
    """(workload, round) in running order: a group's rounds interleave (a1 b1 a2 b2)."""
    plan: list[tuple[Workload, int]] = []
    i = 0
    while i < len(workloads):
        group = [workloads[i]]
        while (
            workloads[i].group is not None
            and i + len(group) < len(workloads)
            and workloads[i + len(group)].group == workloads[i].group
        ):
            group.append(workloads[i + len(group)])
        for r in range(max(w.rounds for w in group)):
            plan.extend((w, r) for w in group if r < w.rounds)
        i += len(group)
    return plan


async def run_one(ctx: BenchContext, workload: Workload, console: Console) -> Result:
    """One round of a workload; a skip or a crash becomes a Result that says so."""
    try:
        result = await workload.load()(ctx)
    except Skipped as e:
        return Result(name=workload.name, value=None, unit=workload.unit, status="skipped",
                      reason=str(e))  # fmt: skip
    except Exception as e:
        console.print(traceback.format_exc(), style="red", markup=False, highlight=False)
        return Result(name=workload.name, value=None, unit=workload.unit, status="error",
                      reason=f"{type(e).__name__}: {e}")  # fmt: skip
    result.name, result.unit, result.target = workload.name, workload.unit, workload.target
    return result


def combine(workload: Workload, rounds: list[Result]) -> Result:
    """One figure per workload: the best round (noise only ever slows a round down), with
    every round's value kept in `extra`."""
    done = [r for r in rounds if r.status == "ok" and r.value is not None]
    if not done:
        return rounds[0]
    best = max(done, key=lambda r: r.value or 0.0)
    if len(rounds) > 1:
        best.extra["rounds"] = [r.value for r in rounds]
        best.extra["statistic"] = f"best of {len(rounds)} rounds"
    return best


async def run_all(
    ctx: BenchContext, workloads: Sequence[Workload], console: Console
) -> list[Result]:
    """Every round of every workload, with progress on the console; one Result each."""
    rounds: dict[str, list[Result]] = {w.name: [] for w in workloads}
    for workload, r in schedule(workloads):
        if rounds[workload.name] and rounds[workload.name][0].status != "ok":
            continue  # skipped or failed once: the next round would say the same
        label = workload.name + (
            f" (round {r + 1}/{workload.rounds})" if workload.rounds > 1 else ""
        )
        with console.status(f"[bold]{label}[/]: {workload.about}"):
            result = await run_one(ctx, workload, console)
        rounds[workload.name].append(result)
        if result.status == "ok" and result.value is not None:
            console.print(f"  {label}: {result.value:,.0f} {result.unit} "
                          f"({result.n:,} in {result.seconds:.2f} s)")  # fmt: skip
        else:
            console.print(f"  {label}: {result.status} ({result.reason})")
    return [combine(w, rounds[w.name]) for w in workloads]


def _cpu_per_op(result: Result) -> float | None:
    client, server = (
        result.extra.get("client_cpu_us_per_op"),
        result.extra.get("server_cpu_us_per_op"),
    )
    return None if client is None or server is None else float(client) + float(server)


def _cpu_ratio(name: str, num: Result, den: Result) -> Ratio | None:
    """The same ratio from CPU cost per operation (client + server): when client and
    server share a machine whose cores are all busy, throughput is CPU-bound, so this
    predicts the throughput ratio, and other processes' load hardly moves it."""
    a, b = _cpu_per_op(num), _cpu_per_op(den)
    if a is None or b is None or a == 0:
        return None
    return Ratio(name=f"{name}, by CPU per op", value=b / a, target=None,
                 how=f"(client + server CPU per op) {b:.0f} us / {a:.0f} us, best rounds; "
                 "noise-robust cross-check, no target")  # fmt: skip


def _ratio_of(spec: RatioSpec, num: Result, den: Result, key: str) -> Ratio:
    """`key` of `num`'s extra over the same of `den`'s."""
    a, b = num.extra.get(key), den.extra.get(key)
    if a is None or not b:
        missing = spec.numerator if a is None else spec.denominator
        return Ratio(name=spec.name, value=None, target=spec.target, how="",
                     reason=f"{missing} reports no {key}")  # fmt: skip
    return Ratio(name=spec.name, value=float(a) / float(b), target=spec.target,
                 how=f"{key}: {float(a):.0f} / {float(b):.0f}")  # fmt: skip


def ratios(results: Sequence[Result]) -> list[Ratio]:
    """Every ratio of RATIOS whose two sides are among `results`."""
    by_name = {r.name: r for r in results}
    out: list[Ratio] = []
    for spec in RATIOS:
        num, den = by_name.get(spec.numerator), by_name.get(spec.denominator)
        if num is None and den is None:
            continue
        if num is None or den is None or num.value is None or den.value is None:
            missing = spec.numerator if num is None or num.value is None else spec.denominator
            out.append(Ratio(name=spec.name, value=None, target=spec.target, how="",
                             reason=f"{missing} has no figure in this run"))  # fmt: skip
            continue
        if spec.of is not None:
            out.append(_ratio_of(spec, num, den, spec.of))
            continue
        num_rounds = num.extra.get("rounds", [num.value])
        den_rounds = den.extra.get("rounds", [den.value])
        if (
            spec.paired
            and len(num_rounds) == len(den_rounds)
            and None not in num_rounds + den_rounds
        ):
            pairs = [a / b for a, b in zip(num_rounds, den_rounds, strict=True)]
            how = (f"mean of {len(pairs)} per-pair ratios (rounds run back to back): "
                   + ", ".join(f"{p:.3f}" for p in pairs))  # fmt: skip
            out.append(Ratio(name=spec.name, value=statistics.fmean(pairs), target=spec.target, how=how))  # fmt: skip
            cpu = _cpu_ratio(spec.name, num, den)
            if cpu is not None:
                out.append(cpu)
        else:
            out.append(Ratio(name=spec.name, value=num.value / den.value, target=spec.target,
                             how="reported figure / reported figure"))  # fmt: skip
    return out
