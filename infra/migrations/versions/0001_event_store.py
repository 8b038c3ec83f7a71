"""The event store: append-only events, idempotency keys, the relay's global hash chain.

Revision ID: 0001
Revises:
Create Date: 2026-11-21

Commit-safe order. Identity values are handed out before commit, so they commit out of
order: a reader that tails by position alone skips an event committed late. Every event
row records the id of the transaction that wrote it (xid8); a reader only reads rows whose
transaction id is below the xmin of its own snapshot (every such transaction has ended,
so no new row can appear there) and orders by (txid, position). A checkpoint is that
pair. No writer waits for any other writer, unless both write the same stream.

Appends (infra/store.py) take no lock of their own: two writers racing for one version of
a stream meet at the events_stream_version unique index, and the second fails.

Tamper evidence. Each event's hash chains its content digest (computed by the writer over
id, stream, type, schema version, data and metadata) with the stream's previous hash, its
version and its recording time. The relay keeps a global chain over every event hash in
commit-safe order, anchored per batch in relay_chain. Event and chain rows are never
updated or deleted: triggers refuse it.
"""

from infra.migrations.sql import run_sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


UPGRADE = r"""
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY,
    txid            xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid NOT NULL UNIQUE,
    stream_id       text NOT NULL,
    category        text NOT NULL,
    stream_version  bigint NOT NULL CHECK (stream_version >= 1),
    type            text NOT NULL,
    schema_version  integer NOT NULL CHECK (schema_version >= 1),
    recorded_at     timestamptz NOT NULL,
    data            json NOT NULL,
    metadata        json NOT NULL,
    prev_hash       bytea NOT NULL,
    hash            bytea NOT NULL,
    CONSTRAINT events_stream_version UNIQUE (stream_id, stream_version),
    -- Readers go by (txid, position) and nothing looks an event up by position alone: one
    -- index serves as key and as commit order, and every append maintains one index fewer.
    CONSTRAINT events_commit_order PRIMARY KEY (txid, position)
);

CREATE TABLE idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    response      text NOT NULL,
    txid          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    position      bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- The relay's state: what it has published, and the global hash chain up to there.
CREATE TABLE relay_checkpoint (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    txid        xid8 NOT NULL,
    position    bigint NOT NULL,
    chain_hash  bytea NOT NULL,
    event_count bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO relay_checkpoint (txid, position, chain_hash, event_count)
VALUES ('0'::xid8, 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0);

-- One anchor per published batch: the chain hash after its last event.
CREATE TABLE relay_chain (
    txid        xid8 NOT NULL,
    position    bigint NOT NULL,
    chain_hash  bytea NOT NULL,
    event_count bigint NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, position)
);

-- Lets one statement of a pipelined transaction refuse to go on (SQLSTATE HB001), so a
-- client learns of a failed precondition from the commit instead of an extra round trip.
CREATE FUNCTION hubbub_require(ok boolean, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'hubbub: %', what USING ERRCODE = 'HB001';
    END IF;
END
$$;

CREATE FUNCTION hubbub_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'hubbub: % on % is refused: the log is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION hubbub_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION hubbub_refuse_change();
CREATE TRIGGER relay_chain_append_only BEFORE UPDATE OR DELETE ON relay_chain
    FOR EACH ROW EXECUTE FUNCTION hubbub_refuse_change();
CREATE TRIGGER relay_chain_no_truncate BEFORE TRUNCATE ON relay_chain
    FOR EACH STATEMENT EXECUTE FUNCTION hubbub_refuse_change();
"""

DOWNGRADE = r"""
DROP TABLE IF EXISTS relay_chain, relay_checkpoint, idempotency_keys, events;
DROP FUNCTION IF EXISTS hubbub_refuse_change;
DROP FUNCTION IF EXISTS hubbub_require;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
