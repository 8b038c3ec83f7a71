"""Every workload and ratio the harness knows, in the order they run."""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from bench.result import Result, Skipped

if TYPE_CHECKING:
    from bench.context import BenchContext

WorkloadFn = Callable[["BenchContext"], Awaitable[Result]]


@dataclass(frozen=True, kw_only=True)
class Workload:
    """A named measurement: `entry` is "module:function", an async function of the context.

    `rounds` > 1 repeats it; workloads sharing a `group` run their rounds interleaved
    (a1 b1 a2 b2), so that each pair meets the same machine weather. `optional` ones are
    hooks for code not written yet: when their import fails they are skipped, not failed.
    """

    name: str
    entry: str
    unit: str
    about: str
    target: float | None = None
    rounds: int = 1
    group: str | None = None
    optional: bool = False

    def load(self) -> WorkloadFn:
        """The workload's function; Skipped for an optional one whose import fails."""
        module_name, _, function = self.entry.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            if self.optional:
                raise Skipped(f"not yet available: {e}") from e
            raise
        return cast(WorkloadFn, getattr(module, function))


@dataclass(frozen=True, kw_only=True)
class RatioSpec:
    """`numerator` / `denominator` from the same run, with a target."""

    name: str
    numerator: str
    denominator: str
    target: float | None
    paired: bool  # both ran interleaved: average the per-pair ratios
    of: str | None = None  # a number both results carry in `extra`: divide those instead


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        name="raw_insert", entry="bench.raw_insert:run", unit="inserts/s", rounds=2,
        group="ceiling",
        about="16 asyncio writers, single-row autocommit INSERT into a plain table: the ceiling",
    ),
    Workload(
        name="append_single", entry="bench.append_single:run", unit="events/s", rounds=2,
        group="ceiling",
        about="16 writers, EventStore.append of 1 event: half new streams, half own stream at its version",
    ),
    # A batched round lasts two seconds: on session 11's machine one round of the same
    # code measured anywhere from 77k to 122k events/s. Three rounds, interleaved, the
    # best reported and all listed, as the single appends are.
    Workload(
        name="append_batched", entry="bench.append_batched:one_stream", unit="events/s",
        target=100_000, rounds=3, group="batched",
        about="3 writers, EventStore.append of 1,000 events to one new stream",
    ),
    Workload(
        name="append_batched_5x100", entry="bench.append_batched:five_streams",
        unit="events/s", target=100_000, rounds=3, group="batched",
        about="3 writers, EventStore.append of 500 events over 5 new streams",
    ),
    Workload(
        name="read_all", entry="bench.read_all:read_all", unit="events/s", target=100_000,
        about="EventStore.iter_all(batch=5000) over the whole log, once settled (VACUUM)",
    ),
    Workload(
        name="read_all_envelope", entry="bench.read_all:read_all_envelope", unit="events/s",
        about="iter_all + RecordedEvent.envelope() + msgspec JSON encode",
    ),
    Workload(
        name="eventsourcing_lib", entry="bench.eventsourcing_lib:run", unit="events/s",
        about="eventsourcing 9.x Application, PostgreSQL, 16 threads, 1 event per save",
    ),
    Workload(
        name="rebuild", entry="bench.rebuild:run", unit="events/s", optional=True,
        about="projections.ops.rebuild_projection of every projection over the whole log (+ user registrations)",
    ),
    Workload(
        name="commit_to_read_model_latency", entry="bench.latency:run", unit="ms",
        optional=True, about="append commit -> relay -> NATS -> projector -> read model",
    ),
    Workload(
        name="token_verify", entry="bench.identity:token_verify", unit="us/verify",
        optional=True, about="infra.tokens.Tokens.verify of a fresh HS256 access token, in process",
    ),
    Workload(
        name="login", entry="bench.identity:login", unit="ms", optional=True,
        about="write API process: sequential POST /v1/auth/login, then RSS under 50 concurrent logins",
    ),
    Workload(
        name="chat_send", entry="bench.chat:chat_send", unit="messages/s", target=3_000,
        about="write API process: POST /v1/channels/{id}/messages, 32 closed-loop clients over "
              "200 channels of 4 members (each client its own channels); p99 <= 25 ms in notes",
    ),
    Workload(
        name="chat_hot_channel", entry="bench.chat:chat_hot_channel", unit="messages/s",
        target=1_000,
        about="write API process: 200 members sending to one channel at once, closed loop; "
              "the store's MessageSent seqs must be exactly 1..N, N = the 201s",
    ),
    Workload(
        name="chat_send_to_visible", entry="bench.chat:chat_send_to_visible", unit="ms",
        about="1,000 messages/s offered (open loop): scheduled send -> 201 -> read API GET with "
              "X-Min-Position answers with the message (write/read API, relay, projector); "
              "p50 (lower is better; p50 <= 5 ms, p99 <= 25 ms in notes)",
    ),
    Workload(
        name="floor_send_to_visible", entry="bench.floor:floor_send_to_visible", unit="ms",
        about="chat_send_to_visible's load through stand-ins of the same kinds on the same "
              "stack with nothing of Hubbub's (bench/floor.py): what the stack and the path's "
              "shape cost on this machine, the floor under Hubbub's figure",
    ),
    Workload(
        name="gateway_connections", entry="bench.gateway:gateway_connections", unit="MiB",
        about="gateway process: RSS holding 10,000 signed-in WebSocket connections, each "
              "subscribed to its own `me` (clients in a process of their own); lower is "
              "better, <= 300 MiB in notes",
    ),
    Workload(
        name="gateway_fanout", entry="bench.gateway:gateway_fanout", unit="deliveries/s",
        target=100_000,
        about="gateway process: event frames/s reaching 5,000 subscribers of one channel, "
              "30 messages/s offered through the write API, relay and projector; counted by "
              "the clients from first frame to last",
    ),
    Workload(
        name="gateway_latency", entry="bench.gateway:gateway_latency", unit="ms",
        about="1,000 messages/s offered (open loop) over 50 channels: scheduled send -> 201 -> "
              "feed -> gateway -> frame at a subscriber's socket (write API, relay, projector, "
              "gateway); p50 (lower is better; p50 <= 10 ms, p99 <= 50 ms in notes)",
    ),
    Workload(
        name="gateway_commit_latency", entry="bench.gateway:gateway_commit_latency", unit="ms",
        about="1,000 events/s appended to the store (open loop, MessageSent over 50 channels, "
              "as the write API appends them): scheduled append -> relay -> projector -> feed "
              "-> gateway -> frame at a subscriber's socket; p50 (p50 <= 10 ms, p99 <= 50 ms "
              "in notes)",
    ),
    Workload(
        name="floor_command_to_frame", entry="bench.floor:floor_command_to_frame", unit="ms",
        about="gateway_latency's load through stand-ins of the same kinds on the same stack "
              "with nothing of Hubbub's (bench/floor.py): the floor under Hubbub's figure",
    ),
    Workload(
        name="auction_hot", entry="bench.auction:auction_hot", unit="decisions/s",
        target=1_000,
        about="write API process: 200 bidders on one auction at once, closed loop, each bidding "
              "current price + increment (learned from 409 minimum_bid); 201s and 409 bid_too_low "
              "both count; the stream must hold exactly the 201s, rising by >= the increment",
    ),
    Workload(
        name="auction_bid_to_visible", entry="bench.auction:auction_bid_to_visible", unit="ms",
        about="250 bids/s offered (open loop) over 200 auctions: scheduled bid -> 201 -> read "
              "API GET /v1/auctions/{id} with X-Min-Position shows it (write/read API, relay, "
              "projector); p50 (lower is better; p99 <= 25 ms in notes)",
    ),
    Workload(
        name="audit_export", entry="bench.audit:audit_export", unit="events/s",
        target=100_000,
        about="read API process: GET /v1/audit/events over a log of >= 1,000,000 events, "
              "NDJSON (CloudEvents in notes), counted as it streams; the read API's RSS "
              "sampled every 10 ms must stay flat",
    ),
    Workload(
        name="audit_verify", entry="bench.audit:audit_verify", unit="events/s",
        target=100_000,
        about="infra.audit.verify_all over the same log: every stream's hash chain and the "
              "global chain",
    ),
)  # fmt: skip

RATIOS: tuple[RatioSpec, ...] = (
    RatioSpec(
        name="append_single / raw_insert", numerator="append_single",
        denominator="raw_insert", target=0.70, paired=True,
    ),
    RatioSpec(
        name="append_single / eventsourcing_lib", numerator="append_single",
        denominator="eventsourcing_lib", target=4.0, paired=False,
    ),
    # Whole HTTP commands (auth, decide, append, answer) beside the library's bare saves:
    # shown for scale, no target.
    RatioSpec(
        name="chat_send / eventsourcing_lib", numerator="chat_send",
        denominator="eventsourcing_lib", target=None, paired=False,
    ),
    # How far above the stack's floor Hubbub's own work puts the same path, in server CPU
    # a message (every process of the path, PostgreSQL and NATS included): no target.
    RatioSpec(
        name="chat_send_to_visible / floor_send_to_visible, server CPU a message",
        numerator="chat_send_to_visible", denominator="floor_send_to_visible", target=None,
        paired=False, of="server_cpu_us_per_op",
    ),
    RatioSpec(
        name="gateway_latency / floor_command_to_frame, server CPU a message",
        numerator="gateway_latency", denominator="floor_command_to_frame", target=None,
        paired=False, of="server_cpu_us_per_op",
    ),
)  # fmt: skip


def select(only: str | None) -> list[Workload]:
    """The workloads named in a comma-separated list (all when None), in registry order."""
    if not only:
        return list(WORKLOADS)
    wanted = {name.strip() for name in only.split(",") if name.strip()}
    unknown = wanted - {w.name for w in WORKLOADS}
    if unknown:
        known = ", ".join(w.name for w in WORKLOADS)
        raise ValueError(f"unknown workload(s): {', '.join(sorted(unknown))} (known: {known})")
    return [w for w in WORKLOADS if w.name in wanted]
