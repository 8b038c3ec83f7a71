"""The gateway's wire protocol: parsing client ops, encoding server frames, and the origin
allowlist setting."""

from __future__ import annotations

import msgspec
import pytest
from typer.testing import CliRunner
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from infra import cli
from infra.auth import Principal
from infra.settings import Settings
from read_api.gateway import protocol
from read_api.gateway.access import Topic, parse_topic
from read_api.gateway.feed import FeedFrame
from read_api.gateway.protocol import Ack, Auth, BadFrame, Ping, Subscribe, parse

ANN = Principal("0192a0b1-0000-7000-8000-000000000001", "s", frozenset())
CID = "0192a0b1-0000-7000-8000-0000000000c1"


def test_ops_parse_into_their_structs() -> None:
    assert parse('{"op": "auth", "token": "t"}') == Auth(token="t")
    assert parse(b'{"op": "subscribe", "topic": "me", "after_seq": 3}') == Subscribe("me", 3)
    assert parse('{"op": "ping", "extra": 1}') == Ping()  # unknown fields are ignored
    assert parse('{"op": "ack", "channel_id": "c", "message_id": "m"}') == Ack("c", "m")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("", "malformed_json"),
        ("{", "malformed_json"),
        ("[]", "invalid_frame"),
        ('"op"', "invalid_frame"),
        ('{"op": 1}', "invalid_frame"),
        ('{"op": "shout"}', "unknown_op"),
        ('{"op": "subscribe", "topic": "me", "after_seq": -1}', "invalid_frame"),
        ('{"op": "subscribe", "topic": "me", "after_seq": "1"}', "invalid_frame"),
        ('{"op": "auth"}', "invalid_frame"),
        ("[" * 5000 + "]" * 5000, "invalid_frame"),  # an array: refused at its first byte
        ('{"op": "subscribe", "topic": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json"),
        ('{"op": "ping", "extra": ' + "[" * 5000 + "]" * 5000 + "}", "malformed_json"),
    ],
)
def test_bad_frames_say_why(raw: str, code: str) -> None:
    with pytest.raises(BadFrame) as e:
        parse(raw)
    assert e.value.code == code


def test_topics() -> None:
    assert parse_topic("me", ANN) == Topic("me", ANN.user_id)
    assert parse_topic(f"channel:{CID.upper()}", ANN) == Topic("channel", CID)
    assert parse_topic(f"auction:{CID}", ANN) == Topic("auction", CID)
    assert parse_topic(f"me:{CID}", ANN) == Topic("me", CID)  # whose: the access check's call
    for bad in ("", "me:", "channel", "channel:x", f"lobby:{CID}", f"channel:{CID}:x"):
        assert parse_topic(bad, ANN) is None, bad


def _unframe(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 200_000])
def test_wire_bytes_are_one_unmasked_text_frame(size: int) -> None:
    payload = b"x" * size
    frame = _unframe(protocol.wire(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_an_event_frame_carries_the_view_as_stored() -> None:
    frame = FeedFrame(f"channel:{CID}", 7, "0" * 32, "message.sent", b'{"text":"hi \\u00e9"}')
    assert msgspec.json.decode(_unframe(frame.wire()).data) == {
        "type": "event", "topic": f"channel:{CID}", "seq": 7, "position": "0" * 32,
        "name": "message.sent", "data": {"text": "hi é"},
    }  # fmt: skip
    assert frame.wire() is frame.wire()  # encoded once, whoever it goes to


def test_error_frames() -> None:
    assert msgspec.json.decode(protocol.error("forbidden", "no", "me")) == {
        "type": "error", "code": "forbidden", "message": "no", "topic": "me"}  # fmt: skip
    assert msgspec.json.decode(protocol.error("x", "y")) == {"type": "error", "code": "x",
                                                             "message": "y"}  # fmt: skip


def test_gateway_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBBUB_GATEWAY_ORIGINS", "https://app.example.com, http://localhost:3000/")
    settings = Settings.from_env()
    assert settings.gateway_origins == ("https://app.example.com", "http://localhost:3000")
    assert (
        settings.to_env()["HUBBUB_GATEWAY_ORIGINS"]
        == "https://app.example.com,http://localhost:3000"
    )
    monkeypatch.delenv("HUBBUB_GATEWAY_ORIGINS")
    assert Settings.from_env().gateway_origins == ()


@pytest.mark.usefixtures("isolated_logging")
def test_a_bad_origin_is_one_line_and_exit_code_2() -> None:
    result = CliRunner().invoke(cli.app, ["gateway"], env={"HUBBUB_GATEWAY_ORIGINS": "example.com"})
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "hubbub: HUBBUB_GATEWAY_ORIGINS must list origins like https://app.example.com,"
        " got 'example.com'"
    ]
