"""`python -m bench`: set up the servers and a fresh database, run the workloads, report.

Usage: python -m bench [--quick] [--only NAME[,NAME]] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from rich.console import Console

from bench import machine, registry, report, servers, timing
from bench.context import FULL, QUICK, BenchContext
from bench.result import Result
from bench.runner import ratios, run_all
from infra.db import migrate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--only", metavar="NAME[,NAME]", help="run only these workloads: "
                        + ", ".join(w.name for w in registry.WORKLOADS))  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="where report.md and report.json go (default: bench/)")  # fmt: skip
    return parser.parse_args(argv)


async def _run(ctx: BenchContext, workloads: list[registry.Workload], console: Console) -> list[Result]:  # fmt: skip
    try:
        return await run_all(ctx, workloads, console)
    finally:
        await ctx.nats.delete_stream()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; 1 when a workload crashed (missed targets are reported, not fatal)."""
    args = parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # piped or under make: room for the notes column
    try:
        workloads = registry.select(args.only)
    except ValueError as e:
        console.print(f"[red]{e}[/]")
        return 2
    mode = "quick" if args.quick else "full"
    run_id = secrets.token_hex(4)
    with (
        tempfile.TemporaryDirectory(prefix="hubbub-bench-", ignore_cleanup_errors=True) as tmp,
        ExitStack() as stack,
    ):
        with console.status("starting PostgreSQL and creating the run's database"):
            pg = stack.enter_context(servers.postgres(Path(tmp)))
            url = stack.enter_context(servers.fresh_database(pg.admin_url, f"hubbub_bench_{run_id}"))  # fmt: skip
            migrate(url)
        timing.SERVER.pid = pg.pid
        nats = servers.LazyNats(Path(tmp), run_id)
        stack.callback(nats.stop)
        facts = machine.facts(url, pg.source)
        console.print(f"database {servers.database_of(url)} on PostgreSQL {facts['postgresql']} "
                      f"({pg.source}); {mode} run")  # fmt: skip
        ctx = BenchContext(url=url, admin_url=pg.admin_url, run_id=run_id,
                           sizes=QUICK if args.quick else FULL, nats=nats)  # fmt: skip
        results = asyncio.run(_run(ctx, workloads, console))
    found = ratios(results)
    report.show(console, results, found, facts)
    report.write(args.out, results, found, facts, mode)
    console.print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'}")
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        # The with-blocks have already dropped the database and stopped the servers.
        print("interrupted: no report written", file=sys.stderr)
        sys.exit(130)
