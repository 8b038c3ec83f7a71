"""The gateway's Prometheus series: connections, subscriptions, frames each way, closes.

Every label value is created here, at import, so each series exists (at 0) from the first
scrape; the children the gateway increments are bound here once, because the fan-out
writes some 200,000 frames a second and a `.labels()` lookup costs more than the
increment it leads to. The fan-out adds whole batches at a time.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge
from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode

from read_api.gateway import protocol
from read_api.gateway.protocol import Ack, Auth, Op, Ping, Subscribe, Typing, Unsubscribe

CONNECTIONS = Gauge("hubbub_gateway_connections", "Authenticated WebSocket connections")
SUBSCRIPTIONS = Gauge(
    "hubbub_gateway_subscriptions", "Topic subscriptions, summed over the connections"
)
DELIVERIES = Counter(
    "hubbub_gateway_deliveries_total", "Event frames written to connections by the live fan-out"
)
SLOW_CLOSES = Counter("hubbub_gateway_slow_closes_total", "Connections closed with 4429")
TAIL_READS = Counter(
    "hubbub_gateway_tail_reads_total",
    "Steps of the live tail, by where its frames came from: the projector's notice of its"
    " batch (notice) or a query of the feed (feed: a notice missed, too big, or not yet heard)",
    ["source"],
)
TAIL_FROM_NOTICES: Final = TAIL_READS.labels("notice")
TAIL_FROM_FEED: Final = TAIL_READS.labels("feed")

FRAMES = Counter("hubbub_gateway_frames_sent_total", "Frames sent to clients, by type", ["type"])
_FRAMES: Final = {kind: FRAMES.labels(kind) for kind in protocol.FRAME_TYPES}
AUTHENTICATED_FRAMES: Final = _FRAMES["authenticated"]
SUBSCRIBED_FRAMES: Final = _FRAMES["subscribed"]
UNSUBSCRIBED_FRAMES: Final = _FRAMES["unsubscribed"]
ERROR_FRAMES: Final = _FRAMES["error"]
PONG_FRAMES: Final = _FRAMES["pong"]
TYPING_FRAMES: Final = _FRAMES["typing"]
PRESENCE_FRAMES: Final = _FRAMES["presence"]
EVENT_FRAMES: Final = _FRAMES["event"]  # live and backfilled

OPS = Counter(
    "hubbub_gateway_ops_received_total",
    "Client frames received, by op (invalid: not JSON, no known op, or bad fields)",
    ["op"],
)
_OPS: Final[dict[type[Op], Counter]] = {
    Auth: OPS.labels("auth"),
    Subscribe: OPS.labels("subscribe"),
    Unsubscribe: OPS.labels("unsubscribe"),
    Typing: OPS.labels("typing"),
    Ping: OPS.labels("ping"),
    Ack: OPS.labels("ack"),
}
INVALID_OPS: Final = OPS.labels("invalid")

CLOSES = Counter(
    "hubbub_gateway_closes_total",
    "WebSocket connections ended, by the close code that ended them (1006: no close frame;"
    " other: a code a client chose)",
    ["code"],
)
# The codes the gateway, the websockets library and well-behaved clients use; any other
# one a client sends is `other`, so clients cannot make up series.
_CLOSES: Final = {
    code: CLOSES.labels(str(code))
    for code in (
        CloseCode.NORMAL_CLOSURE,
        CloseCode.GOING_AWAY,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.NO_STATUS_RCVD,
        CloseCode.ABNORMAL_CLOSURE,
        CloseCode.INVALID_DATA,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        protocol.UNAUTHORIZED,
        protocol.AUTH_TIMEOUT,
        protocol.TOO_SLOW,
    )
}
_OTHER_CLOSES: Final = CLOSES.labels("other")


def received(op: Op) -> None:
    """Count a client frame the gateway understood."""
    _OPS[type(op)].inc()


def closed(ws: ServerConnection) -> None:
    """Count a connection that has ended by the code of the close frame that ended it:
    the first one, whichever side sent it; 1006 when none came or went."""
    p = ws.protocol
    first = p.close_rcvd if p.close_rcvd_then_sent or p.close_sent is None else p.close_sent
    code = CloseCode.ABNORMAL_CLOSURE if first is None else first.code
    _CLOSES.get(code, _OTHER_CLOSES).inc()
