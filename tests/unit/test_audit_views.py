"""The pure parts of the audit views: parameters, the CloudEvents mapping's names, the
state rendering (no secret leaves), and the bootstrap's aggregates."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import msgspec
import pytest
from pyrsistent import pmap, pset

from commands import channel, session, user
from events.envelope import ORIGIN, Position, category_of
from infra.bootstrap import AGGREGATES
from infra.export import CloudEvent, ExportQuery
from infra.history import REDACTED, AsOf, plain
from infra.query import InvalidQuery

NOW = datetime(2026, 1, 31, 12, 0, tzinfo=UTC)


def test_export_parameters_are_read_once_for_http_and_cli() -> None:
    q = ExportQuery.parse(types=["MessageSent,BidPlaced", "MessageSent"], limit="10",
                          since="2026-01-31T12:00:00Z", format="cloudevents")  # fmt: skip
    assert q.where.types == ("MessageSent", "BidPlaced")
    assert (q.limit, q.format, q.after, q.where.since) == (10, "cloudevents", ORIGIN, NOW)
    assert ExportQuery.parse() == ExportQuery()
    with pytest.raises(InvalidQuery) as e:
        ExportQuery.parse(after="x", since="noon", until="2026-01-31T12:00:00", limit="-1",
                          format="csv", types=["a b"])  # fmt: skip
    assert [name for name, _ in e.value.errors] == [
        "after", "type", "since", "until", "limit", "format",
    ]  # fmt: skip


def test_as_of_takes_one_point_at_most() -> None:
    assert AsOf.parse(None, None) == AsOf()
    token = Position(7, 9).token()
    assert AsOf.parse(token, None).position == Position(7, 9)
    with pytest.raises(InvalidQuery) as e:
        AsOf.parse(token, "2026-01-31T12:00:00Z")
    assert [name for name, _ in e.value.errors] == ["at_time"]


def test_cloudevents_extension_names_follow_the_specification() -> None:
    context = {"specversion", "id", "source", "type", "time", "datacontenttype", "data"}
    extensions = set(CloudEvent.__struct_fields__) - context
    assert extensions == {"streamid", "streamversion", "position", "schemaversion", "metadata",
                          "prevhash", "hash"}  # fmt: skip
    assert all(re.fullmatch(r"[a-z0-9]{1,20}", name) for name in extensions)


def test_states_render_as_plain_json_without_secrets() -> None:
    live = channel.Live(
        channel_id="c", name="general", kind="group", visibility="private", password_hash="$argon2id$x",
        owner_id="u1", members=pmap({"u2": "member", "u1": "owner"}), invited=pset(["u4", "u3"]),
        seq=1, messages=pmap({"m1": channel.MessageFacts(1, "u1")}), reactions=pset(),
        read=pmap({"u1": 1}), delivered=pmap(),
    )  # fmt: skip
    body = plain(live)
    assert body["type"] == "Live" and body["password_hash"] == REDACTED
    assert body["members"] == {"u1": "owner", "u2": "member"} and body["invited"] == ["u3", "u4"]
    assert body["messages"] == {"m1": {"seq": 1, "author_id": "u1", "deleted": False}}
    assert msgspec.json.decode(msgspec.json.encode(body)) == body
    registered = user.Registered(user_id="u", username="ann", display_name="Ann",
                                 password_hash="$argon2id$y", roles=frozenset({"b", "a"}))  # fmt: skip
    assert plain(registered)["password_hash"] == REDACTED and plain(registered)["roles"] == [
        "a",
        "b",
    ]
    active = session.Active(session_id="s", user_id="u", current_hash="h1",
                            spent=frozenset({"h0"}), expires_at=NOW)  # fmt: skip
    shown = AGGREGATES["session"].view(active)
    assert "h1" not in str(shown) and "h0" not in str(shown)
    assert plain(user.INITIAL) == {"type": "NoUser"}


def test_the_bootstrap_folds_every_aggregate_category() -> None:
    streams = ["user-1", "session-1", "channel-1", "channelname-general", "dm-1-2", "auction-1"]
    assert set(AGGREGATES) == {category_of(s) for s in streams}
