"""Crypto-shredding: a data key per user, and the secret that keys username guard streams.

Personal fields of events are stored sealed with their subject's key (infra/vault.py).
`hubbub users forget` destroys the key: the log keeps its bytes, so every hash still
verifies, but nobody can read those fields again. A forgotten user's row stays, with no
key, so that no key can ever be made for that user again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

import secrets

from infra.migrations.sql import run_sql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The pepper is random per installation; a migration is the one place it is made.
    pepper = secrets.token_hex(32)
    run_sql(
        f"""
        CREATE TABLE user_keys (
            user_id      uuid PRIMARY KEY,
            key          bytea,
            created_at   timestamptz NOT NULL DEFAULT now(),
            forgotten_at timestamptz,
            CHECK ((key IS NULL) = (forgotten_at IS NOT NULL)),
            CHECK (key IS NULL OR length(key) = 32)
        );
        CREATE TABLE vault_secrets (
            name   text PRIMARY KEY,
            secret bytea NOT NULL
        );
        INSERT INTO vault_secrets (name, secret) VALUES ('username_pepper', '\\x{pepper}');
        """
    )


def downgrade() -> None:
    run_sql("DROP TABLE IF EXISTS user_keys; DROP TABLE IF EXISTS vault_secrets;")
