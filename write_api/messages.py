"""Message commands: send, edit, delete, reactions and receipts (CONTRACT.md, Write API)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from uuid_utils import uuid7  # its str() is the stdlib's, made in a tenth of the time

from commands import channel as ch
from events.channel import ChannelEvent, MessageSent, channel_stream
from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem
from write_api.channels import admin_unless, caller, channel_id_of, submit
from write_api.handling import path_id, user_id_of
from write_api.services import Services

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=4000)]
Emoji = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^\S+$")]
MessageId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_MENTIONS = 20
MENTION = re.compile(r"(?<![\w@])@([a-z0-9_.-]{3,32})")


class SendBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Text
    reply_to: MessageId | None = None


class EditBody(msgspec.Struct, forbid_unknown_fields=True):
    text: Text


class ReceiptBody(msgspec.Struct, forbid_unknown_fields=True):
    message_id: MessageId


class ReactionBody(msgspec.Struct, forbid_unknown_fields=True):
    emoji: Emoji


def message_id_of(raw: str) -> str:
    return path_id(raw, "message_not_found", "no such message in this channel")


async def mentioned(services: Services, text: str) -> tuple[str, ...]:
    """The ids of the users the text's `@username`s name (the decider keeps the members)."""
    if "@" not in text:
        return ()
    names = list(dict.fromkeys(m.rstrip(".") for m in MENTION.findall(text)))[:MAX_MENTIONS]
    ids = await asyncio.gather(*(user_id_of(services.store, services.vault, n) for n in names))
    return tuple(i for i in ids if i is not None)


def _sent(events: Sequence[ChannelEvent], _: object) -> dict[str, Any]:
    (event,) = events
    assert isinstance(event, MessageSent)
    return {"message_id": event.message_id, "seq": event.seq}


@post("/v1/channels/{channel_id:str}/messages", status_code=201, tags=["messages"],
      summary="Send a message", opt={"action": Action.CHAT})  # fmt: skip
async def send_message(
    request: Request[Any, Any, Any], channel_id: FromPath[str], data: JSONBody[SendBody]
) -> Response[dict[str, Any]]:  # fmt: skip
    """201 `{message_id, seq, position}`; 403 not_a_member."""
    # The busiest route takes its collaborators from the request, not as dependencies:
    # resolving two per request costs Litestar more than the rest of the handler.
    services, principal = Services.of(request.app), caller(request)
    cid = channel_id_of(channel_id)
    reply_to = None
    if data.reply_to is not None:
        try:
            reply_to = str(uuid.UUID(data.reply_to))
        except ValueError:
            raise Problem(422, "reply_to_not_found", "reply_to names no message of this channel",
                          errors=[{"field": "reply_to", "message": "not a message id"}]) from None  # fmt: skip
    (text,) = await services.vault.seal(principal.user_id, data.text)  # the author's data
    command = ch.Send(actor_id=principal.user_id, message_id=str(uuid7()), text=text,
                      reply_to=reply_to, mentioned=await mentioned(services, data.text),
                      at=datetime.now(UTC))  # fmt: skip
    return await submit(request, services, principal, cid, command, data, _sent, 201)


@patch("/v1/channels/{channel_id:str}/messages/{message_id:str}", status_code=200,
       tags=["messages"], summary="Edit a message (its author)", opt={"action": Action.CHAT})  # fmt: skip
async def edit_message(
    request: Request[Any, Any, Any], channel_id: FromPath[str], message_id: FromPath[str],
    data: JSONBody[EditBody], services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """New text for your own message; 403 not_author for anyone else's."""
    cid, mid = channel_id_of(channel_id), message_id_of(message_id)
    (text,) = await services.vault.seal(principal.user_id, data.text)
    command = ch.Edit(actor_id=principal.user_id, message_id=mid, text=text,
                      at=datetime.now(UTC))  # fmt: skip
    return await submit(request, services, principal, cid, command, data,
                        lambda *_: {"channel_id": cid, "message_id": mid})  # fmt: skip


@delete("/v1/channels/{channel_id:str}/messages/{message_id:str}", status_code=200,
        tags=["messages"], summary="Delete a message (author, owner or admin)",
        opt={"action": Action.CHAT})  # fmt: skip
async def delete_message(
    request: Request[Any, Any, Any], channel_id: FromPath[str], message_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """The message keeps its place; read models drop its text."""
    cid, mid = channel_id_of(channel_id), message_id_of(message_id)
    state = await services.channels.state_of(channel_stream(cid))
    exempt: tuple[str | None, ...] = ()
    if isinstance(state, ch.Live):
        facts = state.messages.get(mid)
        exempt = (state.owner_id, facts.author_id if facts else None)
    command = ch.DeleteMessage(actor_id=principal.user_id, message_id=mid, at=datetime.now(UTC),
                               actor_is_admin=await admin_unless(services, principal, *exempt))  # fmt: skip
    return await submit(request, services, principal, cid, command, {},
                        lambda *_: {"channel_id": cid, "message_id": mid})  # fmt: skip


@post("/v1/channels/{channel_id:str}/read", status_code=200, tags=["messages"],
      summary="Read receipt, up to and including a message", opt={"action": Action.CHAT})  # fmt: skip
async def mark_read(
    request: Request[Any, Any, Any], channel_id: FromPath[str], data: JSONBody[ReceiptBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Receipts only move forward: an older message changes nothing."""
    cid, mid = channel_id_of(channel_id), message_id_of(data.message_id)
    command = ch.MarkRead(actor_id=principal.user_id, message_id=mid, at=datetime.now(UTC))
    return await submit(request, services, principal, cid, command, data)


@post("/v1/channels/{channel_id:str}/delivered", status_code=200, tags=["messages"],
      summary="Delivery receipt, up to and including a message", opt={"action": Action.CHAT})  # fmt: skip
async def mark_delivered(
    request: Request[Any, Any, Any], channel_id: FromPath[str], data: JSONBody[ReceiptBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """A device of the caller has the channel up to this message."""
    cid, mid = channel_id_of(channel_id), message_id_of(data.message_id)
    command = ch.MarkDelivered(actor_id=principal.user_id, message_id=mid, at=datetime.now(UTC))
    return await submit(request, services, principal, cid, command, data)


@post("/v1/channels/{channel_id:str}/messages/{message_id:str}/reactions", status_code=201,
      tags=["messages"], summary="React to a message", opt={"action": Action.CHAT})  # fmt: skip
async def add_reaction(
    request: Request[Any, Any, Any], channel_id: FromPath[str], message_id: FromPath[str],
    data: JSONBody[ReactionBody], services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """One reaction per user, message and emoji; reacting twice changes nothing."""
    cid, mid = channel_id_of(channel_id), message_id_of(message_id)
    command = ch.React(actor_id=principal.user_id, message_id=mid, emoji=data.emoji,
                       at=datetime.now(UTC))  # fmt: skip
    return await submit(request, services, principal, cid, command, data,
                        lambda *_: {"message_id": mid, "emoji": data.emoji}, 201)  # fmt: skip


@delete("/v1/channels/{channel_id:str}/messages/{message_id:str}/reactions/{emoji:str}",
        status_code=200, tags=["messages"], summary="Take a reaction back",
        opt={"action": Action.CHAT})  # fmt: skip
async def remove_reaction(
    request: Request[Any, Any, Any], channel_id: FromPath[str], message_id: FromPath[str],
    emoji: FromPath[str], services: NamedDependency[Services],
    principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Remove the caller's reaction; removing one not there changes nothing."""
    cid, mid = channel_id_of(channel_id), message_id_of(message_id)
    if not 1 <= len(emoji) <= 32 or any(c.isspace() for c in emoji):
        raise Problem(400, "validation_failed", "emoji must be 1..32 characters, no spaces",
                      errors=[{"field": "emoji", "message": "1..32 characters, no spaces"}])  # fmt: skip
    command = ch.Unreact(actor_id=principal.user_id, message_id=mid, emoji=emoji,
                         at=datetime.now(UTC))  # fmt: skip
    return await submit(request, services, principal, cid, command, {"emoji": emoji},
                        lambda *_: {"message_id": mid, "emoji": emoji})  # fmt: skip
