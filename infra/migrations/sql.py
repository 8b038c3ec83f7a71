"""Run a migration's SQL text as it is written."""

from alembic import op


def run_sql(text: str) -> None:
    """Execute raw SQL on the migration's connection, with no placeholder parsing.

    SQLAlchemy's text() would read `:name` as a bind and the driver would read `%` as a
    placeholder; PL/pgSQL bodies are full of both.
    """
    op.get_bind().connection.driver_connection.execute(text)  # type: ignore[union-attr]
