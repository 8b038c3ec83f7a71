"""Login throttling shared by every write API process: fixed-window failure counters per
username and per client address.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from infra.migrations.sql import run_sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    run_sql(
        """
        CREATE TABLE login_throttle (
            key            text PRIMARY KEY,
            window_started timestamptz NOT NULL,
            failures       integer NOT NULL
        );
        """
    )


def downgrade() -> None:
    run_sql("DROP TABLE IF EXISTS login_throttle;")
