"""One writer per hot stream: concurrent commands to a stream are decided in turn and
appended together.

A busy channel with hundreds of senders would collapse under optimistic concurrency if
each request loaded, decided and appended on its own: all but one of every round would
meet a version conflict. Instead each process keeps, per stream, a queue and the stream's
state. Commands that arrive while an append is in flight wait; then all of them are
decided one after the other on the running state and appended in one multi-event append
at the expected version. Each command gets its own answer (its events' positions, or its
own domain error), and its own idempotency record.

The cached state is never trusted blindly: a successful append proves it was current (the
expected version matched), a conflict (another process wrote) reloads what is new and
decides again, and a refusal or a no-op is re-checked against the store before it is
given, so a stale cache can never refuse what the log allows.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import msgspec

from commands.errors import DomainError
from events.envelope import Position
from events.registry import decode
from infra.http import Problem
from infra.store import (
    ConcurrencyError,
    DuplicateKey,
    EventStore,
    Idempotency,
    NewEvent,
    RecordedEvent,
    StreamAppend,
)
from write_api.combiner import AppendCombiner, settle
from write_api.handling import (
    MAX_ATTEMPTS,
    IdempotentRequest,
    Outcome,
    new_events,
    replay,
)

C = TypeVar("C")
S = TypeVar("S")
E = TypeVar("E")

_ENCODER = msgspec.json.Encoder()


# A command's answer, from the events it decided and the stream's state after them.
Respond = Callable[[Sequence[E], S], dict[str, Any]]


@dataclass
class _Pending(Generic[C, S, E]):
    command: C
    meta: bytes
    idem: IdempotentRequest | None
    respond: Respond[E, S]
    future: asyncio.Future[Outcome]

    def settle(self, outcome: Outcome | BaseException) -> None:
        settle(self.future, outcome)


@dataclass
class _Lane(Generic[C, S, E]):
    state: S
    version: int = -1  # -1: not loaded yet
    queue: collections.deque[_Pending[C, S, E]] = field(default_factory=collections.deque)
    task: asyncio.Task[None] | None = None  # draining the queue
    leading: bool = False  # a submitter is running a batch in its own coroutine

    def idle(self) -> bool:
        return not self.leading and (self.task is None or self.task.done())


@dataclass
class _Decided(Generic[C, S, E]):
    pending: _Pending[C, S, E]
    events: list[E]
    after: S
    error: DomainError | None = None

    def response(self) -> dict[str, Any]:
        return self.pending.respond(self.events, self.after)


class Sequencer(Generic[C, S, E]):
    """Serialises the commands to each stream within this process and batches them."""

    def __init__(
        self,
        store: EventStore,
        decide: Callable[[C, S], list[E]],
        evolve: Callable[[S, E], S],
        initial: S,
        *,
        max_batch: int = 256,
        max_streams: int = 10_000,
        combiner: AppendCombiner | None = None,
    ) -> None:
        self.store = store
        self.decide = decide
        self.evolve = evolve
        self.initial = initial
        self.max_batch = max_batch
        self.max_streams = max_streams
        self.combiner = combiner or AppendCombiner(store)
        self._lanes: collections.OrderedDict[str, _Lane[C, S, E]] = collections.OrderedDict()

    async def submit(
        self,
        stream_id: str,
        command: C,
        *,
        meta: bytes,
        idem: IdempotentRequest | None,
        respond: Respond[E, S],
    ) -> Outcome:
        """Decide `command` on the stream's current state and append what it decided.

        Raises the command's DomainError, Problem 422 for a reused idempotency key, or
        Problem 409 when the stream stayed too contended to append.
        """
        lane = self._lanes.get(stream_id)
        if lane is None:
            lane = self._lanes[stream_id] = _Lane(self.initial)
            self._evict()
        else:
            self._lanes.move_to_end(stream_id)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        lane.queue.append(_Pending(command, meta, idem, respond, future))
        if lane.idle():
            # Nobody works this lane: the command heads the next batch, and its own
            # coroutine decides and appends that batch, rather than a task started for it
            # and a future that task settles. Each of those costs a turn of the event loop,
            # 1-2 ms apiece on a busy machine. Commands that arrive meanwhile wait for a
            # task started once this batch is done, as before.
            lane.leading = True
            try:
                await self._next_batch(stream_id, lane)
            finally:
                lane.leading = False
                if lane.queue:
                    lane.task = asyncio.create_task(self._drain(stream_id, lane))
            if future.done():
                return future.result()
        return await future

    async def state_of(self, stream_id: str) -> S:
        """The stream's state as this process last saw it (loading it if unknown): for
        checks that do not change once true, such as a channel's password hash."""
        lane = self._lanes.get(stream_id)
        if lane is not None and lane.version >= 0:
            return lane.state
        return self._fold(self.initial, await self.store.read_stream(stream_id))

    def _fold(self, state: S, recorded: Sequence[RecordedEvent]) -> S:
        for event in recorded:
            state = self.evolve(
                state, cast(E, decode(event.type, event.schema_version, event.data))
            )
        return state

    def _evict(self) -> None:
        """Forget the least recently used idle streams' states beyond `max_streams`."""
        for stream_id in list(self._lanes)[: max(0, len(self._lanes) - self.max_streams)]:
            lane = self._lanes[stream_id]
            if not lane.queue and lane.idle():
                del self._lanes[stream_id]

    async def close(self) -> None:
        tasks = [lane.task for lane in self._lanes.values() if lane.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, stream_id: str, lane: _Lane[C, S, E]) -> None:
        while lane.queue:
            await self._next_batch(stream_id, lane)

    async def _next_batch(self, stream_id: str, lane: _Lane[C, S, E]) -> None:
        """Decide and append the commands at the head of the lane's queue (up to
        `max_batch`); whatever goes wrong is every one of their callers' answer."""
        batch: list[_Pending[C, S, E]] = []
        keys: set[tuple[str, str]] = set()
        held: list[_Pending[C, S, E]] = []
        while lane.queue and len(batch) < self.max_batch:
            pending = lane.queue.popleft()
            key = (pending.idem.scope, pending.idem.key) if pending.idem else None
            if key in keys:
                held.append(pending)  # the same key twice: after the first is recorded
                continue
            if key is not None:
                keys.add(key)
            batch.append(pending)
        lane.queue.extendleft(reversed(held))
        try:
            await self._run(stream_id, lane, batch)
        except BaseException as e:
            lane.version = -1  # the outcome may be unknown: reload before deciding again
            for pending in batch:
                pending.settle(e)
            if isinstance(e, asyncio.CancelledError):
                raise

    async def _catch_up(self, stream_id: str, lane: _Lane[C, S, E]) -> bool:
        """Fold what the stream gained since the lane last saw it; whether there was any."""
        if lane.version < 0:
            lane.state, lane.version = self.initial, 0
        recorded = await self.store.read_stream(stream_id, from_version=lane.version + 1)
        if recorded:
            lane.state = self._fold(lane.state, recorded)
            lane.version = recorded[-1].stream_version
        return bool(recorded)

    def _decide_all(
        self, lane: _Lane[C, S, E], batch: list[_Pending[C, S, E]]
    ) -> tuple[list[_Decided[C, S, E]], S]:
        state = lane.state
        decided = []
        for pending in batch:
            try:
                events = self.decide(pending.command, state)
            except DomainError as e:
                decided.append(_Decided(pending, [], state, e))
                continue
            for event in events:
                state = self.evolve(state, event)
            decided.append(_Decided(pending, events, state))
        return decided, state

    async def _replays(self, batch: list[_Pending[C, S, E]]) -> list[_Pending[C, S, E]]:
        """Answer the requests whose idempotency key was used before; the others remain."""
        keyed = [(p.idem.scope, p.idem.key) for p in batch if p.idem is not None]
        if not keyed:
            return batch
        found = await self.store.find_idempotent_many(keyed)
        remaining = []
        for pending in batch:
            stored = found.get((pending.idem.scope, pending.idem.key)) if pending.idem else None
            if stored is None:
                remaining.append(pending)
                continue
            assert pending.idem is not None
            try:
                pending.settle(
                    replay(
                        stored.stored_hash, stored.stored_response, stored.position, pending.idem
                    )
                )
            except Problem as e:
                pending.settle(e)
        return remaining

    async def _run(
        self, stream_id: str, lane: _Lane[C, S, E], batch: list[_Pending[C, S, E]]
    ) -> None:
        batch = await self._replays(batch)
        fresh = lane.version < 0
        if fresh:
            await self._catch_up(stream_id, lane)
        for attempt in range(MAX_ATTEMPTS):
            decided, state = self._decide_all(lane, batch)
            if not fresh and any(d.error or not d.events for d in decided):
                # Refusing, or doing nothing, on a state another process may have moved on.
                fresh = True
                if await self._catch_up(stream_id, lane):
                    decided, state = self._decide_all(lane, batch)
            for d in decided:
                if d.error is not None:
                    d.pending.settle(d.error)
            acting = [d for d in decided if d.events]
            if not acting:
                if any(not d.events and d.error is None for d in decided):
                    head = await self.store.head()
                    for d in decided:
                        d.pending.settle(Outcome(d.response(), head))
                return
            try:
                await self._append(stream_id, lane, acting, state)
                return
            except ConcurrencyError:
                pass
            except DuplicateKey:
                batch = await self._replays(batch)
            # Another process wrote: take in what it wrote and decide everything again.
            batch = [p for p in batch if not p.future.done()]
            await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            await self._catch_up(stream_id, lane)
            fresh = True
        raise Problem(409, "too_much_contention", "this stream is too busy; try again",
                      headers={"Retry-After": "1"})  # fmt: skip

    async def _append(
        self, stream_id: str, lane: _Lane[C, S, E], acting: list[_Decided[C, S, E]], state: S
    ) -> None:
        events: list[NewEvent] = []
        keys: list[Idempotency] = []
        responses: list[dict[str, Any]] = []
        for d in acting:
            events.extend(new_events(d.events, d.pending.meta))  # type: ignore[arg-type]
            response = d.response()
            responses.append(response)
            if d.pending.idem is not None:
                idem = d.pending.idem
                keys.append(Idempotency(scope=idem.scope, key=idem.key, request_hash=idem.fingerprint,
                                        response=_ENCODER.encode(response), upto=len(events) - 1))  # fmt: skip
        result = await self.combiner.append(StreamAppend(stream_id, lane.version, events), keys)
        if result.duplicate:  # one event, its key recorded meanwhile: nothing was appended
            (only,) = acting
            assert only.pending.idem is not None
            only.pending.settle(replay(result.stored_hash, result.stored_response,
                                       result.position, only.pending.idem))  # fmt: skip
            return
        lane.state, lane.version = state, lane.version + len(events)
        index = -1
        for d, response in zip(acting, responses, strict=True):
            index += len(d.events)
            d.pending.settle(Outcome(response, Position(result.txid, result.positions[index])))
