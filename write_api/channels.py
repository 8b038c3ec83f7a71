"""Chat commands: channels, membership, direct channels (CONTRACT.md, Write API).

Commands to an existing channel go through the process's channel sequencer (see
write_api/sequencer.py); opening and deleting a channel also touch a guard stream and
take the plain load -> decide -> append path.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, delete, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from uuid_utils.compat import uuid7

from commands import channel as ch
from commands import channel_guard as guard
from commands import user as users
from events.channel import (
    ChannelEvent,
    ChatEvent,
    channel_name_stream,
    channel_stream,
    direct_stream,
    stream_of,
)
from events.user import user_stream
from infra import authz
from infra.auth import Principal
from infra.authz import Action
from infra.http import Problem, correlation_of
from infra.store import ANY, NO_STREAM, StreamAppend
from write_api.handling import (
    Decision,
    IdempotentRequest,
    answer,
    execute,
    idempotency_key,
    load,
    metadata,
    new_events,
    path_id,
)
from write_api.roles import is_admin
from write_api.sequencer import Respond
from write_api.services import Services

ChannelName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"\S")]
Topic = Annotated[str, msgspec.Meta(max_length=256)]
JoinPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
UserId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CreateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: ChannelName
    visibility: Literal["public", "private"]
    topic: Topic | None = None
    password: JoinPassword | None = None


class JoinBody(msgspec.Struct, forbid_unknown_fields=True):
    password: JoinPassword | None = None


class UserBody(msgspec.Struct, forbid_unknown_fields=True):
    user_id: UserId


def channel_id_of(raw: str) -> str:
    return path_id(raw, "channel_not_found", "no such channel")


async def existing_user(services: Services, raw: str) -> str:
    """A body's user id, canonical, of a registered (and not forgotten) user; else 404
    user_not_found."""
    user_id = path_id(raw, "user_not_found", "no such user")
    state, _ = await load(services.store, user_stream(user_id), users.INITIAL, users.evolve)
    if not isinstance(state, users.Registered):
        raise Problem(404, "user_not_found", "no such user")
    return user_id


def caller(request: Request[Any, Any, Any]) -> Principal:
    """The authenticated caller, as the guard found it: the `principal` dependency without
    Litestar's dependency injection, for the busiest routes."""
    return authz.principal(request, Services.of(request.app))


def command_context(
    request: Request[Any, Any, Any], services: Services, principal: Principal, body: Any
) -> tuple[bytes, IdempotentRequest | None]:
    """The metadata of a command's events and its idempotency key, if it sent one."""
    correlation, traceparent = correlation_of(request)
    key = idempotency_key(request.headers.get("idempotency-key"))
    idem = (IdempotentRequest.of(services.settings.resolved_jwt_secret(), principal.user_id, key,
                                 request.method, request.url.path, body) if key else None)  # fmt: skip
    return metadata(principal.user_id, correlation, traceparent, idem), idem


async def submit(
    request: Request[Any, Any, Any],
    services: Services,
    principal: Principal,
    channel_id: str,
    command: ch.ChannelCommand,
    body: Any,
    respond: Respond[ChannelEvent, ch.ChannelState] | None = None,
    status: int = 200,
) -> Response[dict[str, Any]]:
    """Run a command on an existing channel through the sequencer."""
    meta, idem = command_context(request, services, principal, body)
    outcome = await services.channels.submit(
        channel_stream(channel_id), command, meta=meta, idem=idem,
        respond=respond or (lambda *_: {"channel_id": channel_id}),
    )  # fmt: skip
    return answer(outcome, status)


def appends_of(
    events: Sequence[ChatEvent], expected: dict[str, int], meta: bytes
) -> list[StreamAppend]:
    """Events grouped by stream, in order, each stream at its expected version."""
    streams: dict[str, list[ChatEvent]] = {}
    for event in events:
        streams.setdefault(stream_of(event), []).append(event)
    return [StreamAppend(s, expected[s], new_events(evs, meta)) for s, evs in streams.items()]


async def admin_unless(services: Services, principal: Principal, *exempt: str | None) -> bool:
    """Whether the caller is an admin, looked up only when it matters (the caller is none
    of `exempt`, e.g. the channel's owner)."""
    if principal.user_id in exempt:
        return False
    return await is_admin(services.store, principal.user_id)


@post("/v1/channels", status_code=201, tags=["channels"], summary="Create a channel",
      opt={"action": Action.CHAT})  # fmt: skip
async def create_channel(
    request: Request[Any, Any, Any], data: JSONBody[CreateBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """201 `{channel_id, position}`; the creator is owner and member; 409 channel_name_taken."""
    meta, idem = command_context(request, services, principal, data)
    channel_id = str(uuid7())
    name_stream = channel_name_stream(data.name)
    password_hash = await services.passwords.hash(data.password) if data.password else None

    async def attempt() -> Decision:
        name, version = await load(services.store, name_stream, guard.NAME_FREE, guard.evolve_name)
        command = guard.CreateChannel(
            actor_id=principal.user_id, channel_id=channel_id, name=data.name, topic=data.topic,
            visibility=data.visibility, password_hash=password_hash, at=datetime.now(UTC),
        )  # fmt: skip
        decided = guard.decide_create(command, name)
        expected = {name_stream: version, channel_stream(channel_id): NO_STREAM}
        return Decision(appends_of(decided, expected, meta), {"channel_id": channel_id})

    return answer(await execute(services.store, attempt, idem), 201)


@post("/v1/channels/{channel_id:str}/join", status_code=200, tags=["channels"],
      summary="Join a channel", opt={"action": Action.CHAT})  # fmt: skip
async def join_channel(
    request: Request[Any, Any, Any], channel_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
    data: JSONBody[JoinBody | None] = None,
) -> Response[dict[str, Any]]:  # fmt: skip
    """Join a public channel (with its password, if it has one) or one you were invited to."""
    cid = channel_id_of(channel_id)
    body = data or JoinBody()
    state = await services.channels.state_of(channel_stream(cid))
    password_ok = False
    if isinstance(state, ch.Live) and state.password_hash and body.password is not None:
        password_ok = await services.passwords.verify(state.password_hash, body.password)
    command = ch.Join(actor_id=principal.user_id, password_ok=password_ok, at=datetime.now(UTC))
    return await submit(request, services, principal, cid, command, body)


@post("/v1/channels/{channel_id:str}/invites", status_code=201, tags=["channels"],
      summary="Invite a user (owner or admin)", opt={"action": Action.CHAT})  # fmt: skip
async def invite(
    request: Request[Any, Any, Any], channel_id: FromPath[str], data: JSONBody[UserBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Invite `user_id` into the channel; inviting twice changes nothing."""
    cid = channel_id_of(channel_id)
    user_id = await existing_user(services, data.user_id)
    state = await services.channels.state_of(channel_stream(cid))
    owner = state.owner_id if isinstance(state, ch.Live) else None
    command = ch.Invite(actor_id=principal.user_id, user_id=user_id, at=datetime.now(UTC),
                        actor_is_admin=await admin_unless(services, principal, owner))  # fmt: skip
    return await submit(request, services, principal, cid, command, data,
                        respond=lambda *_: {"channel_id": cid, "user_id": user_id}, status=201)  # fmt: skip


@post("/v1/channels/{channel_id:str}/leave", status_code=200, tags=["channels"],
      summary="Leave a channel", opt={"action": Action.CHAT})  # fmt: skip
async def leave_channel(
    request: Request[Any, Any, Any], channel_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Leave the channel; 403 not_a_member when not in it."""
    cid = channel_id_of(channel_id)
    command = ch.Leave(actor_id=principal.user_id, at=datetime.now(UTC))
    return await submit(request, services, principal, cid, command, {})


@delete("/v1/channels/{channel_id:str}", status_code=200, tags=["channels"],
        summary="Delete a channel (owner or admin)", opt={"action": Action.CHAT})  # fmt: skip
async def delete_channel(
    request: Request[Any, Any, Any], channel_id: FromPath[str],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """Delete the channel and free its name."""
    cid = channel_id_of(channel_id)
    meta, idem = command_context(request, services, principal, {})
    stream = channel_stream(cid)

    async def attempt() -> Decision:
        state, version = await load(services.store, stream, ch.INITIAL, ch.evolve)
        owner = state.owner_id if isinstance(state, ch.Live) else None
        command = ch.DeleteChannel(actor_id=principal.user_id, at=datetime.now(UTC),
                                   actor_is_admin=await admin_unless(services, principal, owner))  # fmt: skip
        decided = guard.decide_delete(command, state)
        assert isinstance(state, ch.Live)
        # The name's guard: released by the channel that holds it, whatever came before.
        expected = {stream: version, channel_name_stream(state.name): ANY}
        return Decision(appends_of(decided, expected, meta), {"channel_id": cid})

    return answer(await execute(services.store, attempt, idem), 200)


@post("/v1/dms", status_code=200, tags=["channels"], summary="The direct channel with a user",
      opt={"action": Action.CHAT})  # fmt: skip
async def open_direct(
    request: Request[Any, Any, Any], data: JSONBody[UserBody],
    services: NamedDependency[Services], principal: NamedDependency[Principal],
) -> Response[dict[str, Any]]:  # fmt: skip
    """`{channel_id}`: the one direct channel of the caller and `user_id`, opened on first use."""
    other = await existing_user(services, data.user_id)
    meta, idem = command_context(request, services, principal, data)
    pair = direct_stream(principal.user_id, other)
    fresh_id = str(uuid7())

    async def attempt() -> Decision:
        state, version = await load(services.store, pair, guard.NO_DIRECT, guard.evolve_direct)
        command = guard.OpenDirect(actor_id=principal.user_id, other_id=other,
                                   channel_id=fresh_id, at=datetime.now(UTC))  # fmt: skip
        decided = guard.decide_direct(command, state)
        channel_id = state.channel_id if isinstance(state, guard.DirectOpen) else fresh_id
        expected = {pair: version, channel_stream(channel_id): NO_STREAM}
        return Decision(appends_of(decided, expected, meta), {"channel_id": channel_id})

    return answer(await execute(services.store, attempt, idem), 200)
