"""Structured logging for every Hubbub process: structlog in front, stdlib behind.

One line per event on stderr, JSON for machines or coloured key=value for people. Records
from libraries that use the stdlib (uvicorn, alembic, nats) go through the same processors,
so every line has the same shape, and context bound with structlog.contextvars (the
request's correlation id, ...) appears on every line logged while it is bound.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from infra.settings import Settings

__all__ = ["configure_logging"]

_HANDLER_NAME = "hubbub"
# Libraries that say too much at INFO for an operator's terminal; DEBUG still shows them.
_CHATTY = ("alembic.runtime.plugins",)


class _CurrentStderrHandler(logging.StreamHandler[TextIO]):
    """A stream handler that writes to whatever sys.stderr is at the moment of writing.

    rich's live displays (the rebuild progress bar) and pytest swap sys.stderr; a handler
    holding on to the original stream would scribble underneath the bar or past the capture.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass  # always follow sys.stderr


def _add_service(service: str) -> Processor:
    def add_service(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return add_service


def _level(name: str) -> int:
    levels = logging.getLevelNamesMapping()
    if name.upper() not in levels:
        choices = ", ".join(n for n in levels if n not in ("NOTSET", "WARN", "FATAL"))
        raise ValueError(f"HUBBUB_LOG_LEVEL must be one of {choices}, got {name!r}")
    return levels[name.upper()]


def _rendering(settings: Settings, service: str | None) -> list[Processor]:
    """The formatter's last steps: what depends on settings lives here, not in structlog's
    chain, because loggers cache that chain on first use while the handler is replaced."""
    steps: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if service is not None:
        steps.append(_add_service(service))
    if settings.log_format == "json":
        # Tracebacks become data inside the one JSON line. Never with locals: they hold
        # passwords, tokens and whole request bodies.
        transformer = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        steps.append(structlog.processors.ExceptionRenderer(transformer))
        steps.append(structlog.processors.JSONRenderer())
        return steps
    tty = sys.stderr.isatty()
    steps.append(
        structlog.dev.ConsoleRenderer(
            colors=tty,
            exception_formatter=(
                structlog.dev.RichTracebackFormatter(show_locals=False)
                if tty
                else structlog.dev.plain_traceback
            ),
        )
    )
    return steps


def configure_logging(settings: Settings, *, service: str | None = None) -> None:
    """Route structlog and stdlib logging through one renderer, as settings ask.

    Safe to call again: the handler installed by the previous call is replaced, never
    duplicated. `service` (the CLI passes the command's name) is added to every line, so
    the interleaved output of `hubbub run`'s children says who said what.
    """
    level = _level(settings.log_level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            # Ask the stdlib logger first: a disabled level costs no processing at all.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

    handler = _CurrentStderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            # Records from stdlib loggers have not been through `shared` yet.
            foreign_pre_chain=shared,
            processors=_rendering(settings, service),
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
