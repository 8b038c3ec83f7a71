"""Appends to many streams, made at about the same time, as one transaction.

Each stream's sequencer lane already batches the commands to its stream. Sends to many
quiet channels still came one transaction each: a commit, a WAL flush and a statement per
message. The combiner takes whatever appends arrive while the previous one is in flight
and makes them one atomic multi-stream append. The store checks every stream's expected
version first; a stream that moved on is told so (ConcurrencyError) and the others are
appended without it, so one busy stream never holds back the rest.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec

from infra.store import (
    AppendResult,
    ConcurrencyError,
    DuplicateKey,
    EventStore,
    Idempotency,
    StreamAppend,
)

T = TypeVar("T")


@dataclass
class _Part:
    append: StreamAppend
    keys: list[Idempotency]
    future: asyncio.Future[AppendResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def settle(self, outcome: AppendResult | BaseException) -> None:
        settle(self.future, outcome)


def settle(future: asyncio.Future[T], outcome: T | BaseException) -> None:
    """Give a waiting caller its result or its exception, unless it has one (or left). A
    cancellation cancels the future: one whose caller has left then logs nothing ("exception
    never retrieved") when it is collected."""
    if future.done():
        return
    if isinstance(outcome, asyncio.CancelledError):
        future.cancel()
    elif isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class AppendCombiner:
    """One stream's append at a time per caller; many callers' appends per transaction."""

    def __init__(self, store: EventStore, *, max_events: int = 2000) -> None:
        self.store = store
        self.max_events = max_events
        self._waiting: list[_Part] = []
        self._task: asyncio.Task[None] | None = None

    async def append(self, append: StreamAppend, keys: list[Idempotency]) -> AppendResult:
        """Append to one stream at its expected version, possibly together with others.
        Raises what EventStore.append raises for that stream alone."""
        part = _Part(append, keys)
        self._waiting.append(part)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return await part.future

    async def _run(self) -> None:
        while self._waiting:
            parts: list[_Part] = []
            streams: set[str] = set()
            size = 0
            later = []
            for part in self._waiting:
                n = len(part.append.events)
                if part.append.stream_id in streams or (parts and size + n > self.max_events):
                    later.append(part)  # one append names a stream once; and stays bounded
                    continue
                parts.append(part)
                streams.add(part.append.stream_id)
                size += n
            self._waiting = later
            try:
                await self._flush(parts)
            except BaseException as e:
                for part in parts:
                    part.settle(e)
                if isinstance(e, asyncio.CancelledError):
                    raise

    async def _alone(self, part: _Part) -> None:
        try:
            part.settle(await self.store.append([part.append], idempotency=part.keys or None))
        except Exception as e:
            part.settle(e)

    async def _flush(self, parts: list[_Part]) -> None:
        while len(parts) > 1:
            keys: list[Idempotency] = []
            start = 0
            for part in parts:
                keys.extend(msgspec.structs.replace(k, upto=start + (k.upto % len(part.append.events)))
                            for k in part.keys)  # fmt: skip
                start += len(part.append.events)
            try:
                result = await self.store.append(
                    [p.append for p in parts], idempotency=keys or None
                )
            except ConcurrencyError as e:
                # That stream moved on: its caller decides again; the others go ahead.
                for part in parts:
                    if part.append.stream_id == e.stream_id:
                        part.settle(e)
                parts = [p for p in parts if p.append.stream_id != e.stream_id]
                continue
            except DuplicateKey:
                # Someone's key was used meanwhile: each on its own says whose.
                await asyncio.gather(*(self._alone(p) for p in parts))
                return
            start = 0
            for part in parts:
                n = len(part.append.events)
                part.settle(AppendResult(
                    txid=result.txid, positions=result.positions[start:start + n],
                    versions=result.versions[start:start + n], recorded_at=result.recorded_at,
                ))  # fmt: skip
                start += n
            return
        if parts:
            await self._alone(parts[0])
