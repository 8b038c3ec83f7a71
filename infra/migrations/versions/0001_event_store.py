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

-- Append events to one or more streams atomically.
--   p_streams / p_expected: every stream touched, with its expected version
--     (-1 any, 0 no stream yet, N exactly N events so far).
--   p_stream_ids .. p_digests: one element per event, in order.
--   p_idem_*: an optional idempotency key; when it was used before, nothing is appended
--     and the first request's hash and response come back with duplicate = true.
-- Raises SQLSTATE HB409 on a version mismatch seen before inserting; two writers racing
-- for the same version meet at the events_stream_version unique index instead (the
-- second waits for the first to commit and then fails with unique_violation), so writers
-- take no lock of their own and writers of different streams never wait for each other.
CREATE FUNCTION hubbub_append(
    p_streams          text[],
    p_expected         bigint[],
    p_stream_ids       text[],
    p_event_ids        uuid[],
    p_types            text[],
    p_schema_versions  integer[],
    p_data             text[],
    p_metadata         text[],
    p_digests          bytea[],
    p_idem_scope       text DEFAULT NULL,
    p_idem_key         text DEFAULT NULL,
    p_idem_hash        bytea DEFAULT NULL,
    p_idem_response    text DEFAULT NULL
) RETURNS TABLE (
    txid            xid8,
    positions       bigint[],
    versions        bigint[],
    recorded_at     timestamptz,
    duplicate       boolean,
    stored_hash     bytea,
    stored_response text
) LANGUAGE plpgsql AS $$
DECLARE
    v_now         timestamptz := now();
    v_micros      bytea := int8send((extract(epoch FROM now()) * 1000000)::bigint);
    v_n           integer := cardinality(p_event_ids);
    v_m           integer := cardinality(p_streams);
    v_heads       bigint[] := array_fill(0::bigint, ARRAY[v_m]);
    v_head_hashes bytea[] := array_fill('\x0000000000000000000000000000000000000000000000000000000000000000'::bytea, ARRAY[v_m]);
    v_versions    bigint[] := array_fill(0::bigint, ARRAY[v_n]);
    v_prevs       bytea[] := array_fill(''::bytea, ARRAY[v_n]);
    v_hashes      bytea[] := array_fill(''::bytea, ARRAY[v_n]);
    v_positions   bigint[];
    v_version     bigint;
    v_hash        bytea;
    i             integer;
    j             integer;
BEGIN
    IF v_n = 0 THEN
        RAISE EXCEPTION 'hubbub_append: no events' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_idem_key IS NOT NULL THEN
        INSERT INTO idempotency_keys (scope, key, request_hash, response)
        VALUES (p_idem_scope, p_idem_key, p_idem_hash, p_idem_response)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            -- The first request with this key has committed (we waited for it): replay it.
            RETURN QUERY
                SELECT k.txid, ARRAY[k.position], NULL::bigint[], k.created_at, true,
                       k.request_hash, k.response
                FROM idempotency_keys k WHERE k.scope = p_idem_scope AND k.key = p_idem_key;
            RETURN;
        END IF;
    END IF;

    FOR j IN 1 .. v_m LOOP
        SELECT e.stream_version, e.hash INTO v_version, v_hash
        FROM events e WHERE e.stream_id = p_streams[j]
        ORDER BY e.stream_version DESC LIMIT 1;
        IF FOUND THEN
            v_heads[j] := v_version;
            v_head_hashes[j] := v_hash;
        END IF;
        IF (p_expected[j] = 0 AND v_heads[j] <> 0)
           OR (p_expected[j] > 0 AND v_heads[j] <> p_expected[j]) THEN
            RAISE EXCEPTION 'stream % is at version %, expected %', p_streams[j], v_heads[j], p_expected[j]
                USING ERRCODE = 'HB409', DETAIL = p_streams[j], HINT = v_heads[j]::text;
        END IF;
    END LOOP;

    FOR i IN 1 .. v_n LOOP
        j := CASE WHEN v_m = 1 THEN 1 ELSE array_position(p_streams, p_stream_ids[i]) END;
        v_heads[j] := v_heads[j] + 1;
        v_versions[i] := v_heads[j];
        v_prevs[i] := v_head_hashes[j];
        v_head_hashes[j] := sha256(v_prevs[i] || int8send(v_heads[j]) || v_micros || p_digests[i]);
        v_hashes[i] := v_head_hashes[j];
    END LOOP;

    WITH ins AS (
        INSERT INTO events (event_id, stream_id, category, stream_version, type, schema_version,
                            recorded_at, data, metadata, prev_hash, hash)
        SELECT u.eid, u.sid, split_part(u.sid, '-', 1), u.ver, u.typ, u.sv,
               v_now, u.dat::json, u.meta::json, u.prev, u.h
        FROM unnest(p_event_ids, p_stream_ids, v_versions, p_types, p_schema_versions,
                    p_data, p_metadata, v_prevs, v_hashes)
             WITH ORDINALITY AS u(eid, sid, ver, typ, sv, dat, meta, prev, h, ord)
        ORDER BY u.ord
        RETURNING events.position
    )
    SELECT array_agg(ins.position ORDER BY ins.position) INTO v_positions FROM ins;

    IF p_idem_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET position = v_positions[v_n]
        WHERE k.scope = p_idem_scope AND k.key = p_idem_key;
    END IF;
    RETURN QUERY SELECT pg_current_xact_id(), v_positions, v_versions, v_now, false,
                        NULL::bytea, NULL::text;
END
$$;
"""

DOWNGRADE = r"""
DROP FUNCTION IF EXISTS hubbub_append;
DROP TABLE IF EXISTS relay_chain, relay_checkpoint, idempotency_keys, events;
DROP FUNCTION IF EXISTS hubbub_refuse_change;
"""


def upgrade() -> None:
    run_sql(UPGRADE)


def downgrade() -> None:
    run_sql(DOWNGRADE)
