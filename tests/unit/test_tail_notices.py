"""How the gateway's live tail strings the projector's frame notices together: batch after
batch from where it stands, never past what every read model has applied, and never one
it cannot trust (tests/integration/test_frame_notices.py runs them for real)."""

from __future__ import annotations

import json
from typing import Any, cast

from events.envelope import Position
from read_api.freshness import Freshness
from read_api.gateway import feed
from read_api.gateway.feed import FeedFrame, FeedReader, Tailer


def at(n: int) -> Position:
    return Position(7, n)


def notice(after: int, upto: int, *, frames: bool = True) -> str:
    body: dict[str, Any] = {"after": at(after).token(), "upto": at(upto).token()}
    if frames:
        body["frames"] = [
            ["channel:c", n, at(n).token(), "message.sent", {"n": n}, f"e{n}", None]
            for n in range(after + 1, upto + 1)
        ]
    return json.dumps(body, separators=(",", ":"))


def tailer(tail: int) -> Tailer:
    # Only the notices are exercised here: no query, no wait.
    return Tailer(cast(FeedReader, None), cast(Freshness, None), lambda *_: None, at(tail))


def seqs(frames: list[FeedFrame]) -> list[int]:
    return [f.seq for f in frames]


def test_notices_are_strung_from_the_tail_whatever_order_they_came_in() -> None:
    t = tailer(10)
    for payload in (notice(12, 15), notice(10, 12), notice(15, 16)):
        t.noticed(payload)
    frames, reached = t._from_notices(at(10), at(16))
    assert reached == at(16) and seqs(frames) == [11, 12, 13, 14, 15, 16]
    assert frames[0].data == b'{"n":11}' and frames[0].event_id == "e11"
    assert frames[0].payload() == (
        b'{"type":"event","topic":"channel:c","seq":11,"position":"'
        + at(11).token().encode()
        + b'","name":"message.sent","data":{"n":11}}'
    )
    assert t.notices == {}


def test_a_missing_or_frameless_notice_stops_the_string_there() -> None:
    t = tailer(10)
    for payload in (notice(10, 12), notice(13, 15), notice(15, 16, frames=False)):
        t.noticed(payload)
    frames, reached = t._from_notices(at(10), at(16))
    assert reached == at(12) and seqs(frames) == [11, 12]  # 12 -> 13 never came
    assert list(t.notices) == [at(13)]  # kept: the feed's read may end at 13
    frames, reached = t._from_notices(at(13), at(16))
    assert reached == at(15) and seqs(frames) == [14, 15]  # 15 -> 16 had no frames


def test_a_notice_past_what_every_read_model_applied_waits() -> None:
    t = tailer(10)
    t.noticed(notice(10, 14))
    assert t._from_notices(at(10), at(12)) == ([], at(10))
    frames, reached = t._from_notices(at(10), at(14))
    assert reached == at(14) and seqs(frames) == [11, 12, 13, 14]


def test_notices_behind_the_tail_unreadable_ones_and_too_many_are_dropped() -> None:
    t = tailer(10)
    for payload in ("", "not json", '{"after": "x", "upto": "y", "frames": []}',
                    '{"after": 1}', notice(3, 10)):  # fmt: skip
        t.noticed(payload)
    assert t.notices == {}
    t.noticed(notice(20, 21))
    t._from_notices(at(30), at(40))  # the tail went past it
    assert t.notices == {}
    for n in range(feed._MAX_NOTICES + 1):
        t.noticed(notice(100 + 2 * n, 101 + 2 * n))  # none follows on from another
    assert len(t.notices) <= feed._MAX_NOTICES
