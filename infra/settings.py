"""Process configuration, read once from the environment (CONTRACT.md, Configuration)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _port(name: str, default: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        port = int(raw)
    except ValueError as e:
        raise ValueError(f"{name} must be a port number, got {raw!r}") from e
    if not 0 < port < 65536:
        raise ValueError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _origins(raw: str) -> tuple[str, ...]:
    """Comma-separated origins (`https://app.example.com`), each scheme://host[:port]."""
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ValueError(
                f"HUBBUB_GATEWAY_ORIGINS must list origins like https://app.example.com, got {origin!r}"
            )
    return origins


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything a Hubbub process needs to know about its surroundings."""

    database_url: str | None
    nats_url: str | None
    data_dir: Path
    write_api_port: int = 8000
    read_api_port: int = 8001
    gateway_port: int = 8002
    host: str = "127.0.0.1"
    log_level: str = "INFO"
    log_format: str = "console"
    # JetStream naming: tests give every run its own stream and subject prefix.
    nats_stream: str = "HUBBUB_EVENTS"
    subject_prefix: str = ""
    jwt_secret: str | None = field(default=None, repr=False)
    # Origins browsers may open the gateway's WebSocket from; empty: any. Requests with no
    # Origin header (native clients) are always accepted: the token is in the first frame,
    # never in a cookie, so a foreign page cannot ride on a user's credentials.
    gateway_origins: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> Settings:
        """Read the HUBBUB_* variables; unset URLs mean embedded servers."""
        jwt_secret = _env("HUBBUB_JWT_SECRET")
        if jwt_secret is not None and len(jwt_secret.encode()) < 32:
            raise ValueError(
                "HUBBUB_JWT_SECRET must be at least 32 bytes (HS256 keys shorter than the hash are weak)"
            )
        log_format = _env("HUBBUB_LOG_FORMAT", "console") or "console"
        if log_format not in ("json", "console"):
            raise ValueError(f"HUBBUB_LOG_FORMAT must be json or console, got {log_format!r}")
        return cls(
            database_url=_env("HUBBUB_DATABASE_URL"),
            nats_url=_env("HUBBUB_NATS_URL"),
            data_dir=Path(_env("HUBBUB_DATA_DIR", "./.hubbub") or "./.hubbub").resolve(),
            write_api_port=_port("HUBBUB_WRITE_API_PORT", 8000),
            read_api_port=_port("HUBBUB_READ_API_PORT", 8001),
            gateway_port=_port("HUBBUB_GATEWAY_PORT", 8002),
            host=_env("HUBBUB_HOST", "127.0.0.1") or "127.0.0.1",
            log_level=(_env("HUBBUB_LOG_LEVEL", "INFO") or "INFO").upper(),
            log_format=log_format,
            nats_stream=_env("HUBBUB_NATS_STREAM", "HUBBUB_EVENTS") or "HUBBUB_EVENTS",
            subject_prefix=_env("HUBBUB_NATS_SUBJECT_PREFIX", "") or "",
            jwt_secret=jwt_secret,
            gateway_origins=_origins(_env("HUBBUB_GATEWAY_ORIGINS", "") or ""),
        )

    def to_env(self) -> dict[str, str]:
        """The HUBBUB_* variables that make another process read these same settings."""
        env = {
            "HUBBUB_DATA_DIR": str(self.data_dir),
            "HUBBUB_WRITE_API_PORT": str(self.write_api_port),
            "HUBBUB_READ_API_PORT": str(self.read_api_port),
            "HUBBUB_GATEWAY_PORT": str(self.gateway_port),
            "HUBBUB_HOST": self.host,
            "HUBBUB_LOG_LEVEL": self.log_level,
            "HUBBUB_LOG_FORMAT": self.log_format,
            "HUBBUB_NATS_STREAM": self.nats_stream,
            "HUBBUB_NATS_SUBJECT_PREFIX": self.subject_prefix,
        }
        if self.gateway_origins:
            env["HUBBUB_GATEWAY_ORIGINS"] = ",".join(self.gateway_origins)
        for name, value in (
            ("HUBBUB_DATABASE_URL", self.database_url),
            ("HUBBUB_NATS_URL", self.nats_url),
            ("HUBBUB_JWT_SECRET", self.jwt_secret),
        ):
            if value:
                env[name] = value
        return env

    def resolved_jwt_secret(self) -> str:
        """The configured secret, or in development one generated once and kept in the data dir."""
        if self.jwt_secret:
            return self.jwt_secret
        path = self.data_dir / "jwt_secret"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_urlsafe(48))
            tmp.chmod(0o600)
            os.replace(tmp, path)
        return path.read_text().strip()

    def subject(self, category: str, event_type: str) -> str:
        """The JetStream subject an event is published on: events.<category>.<type>."""
        return f"{self.subject_prefix}events.{category}.{event_type}"

    def gateway_subject(self, name: str) -> str:
        """A NATS core subject the gateways share (typing, presence): never in JetStream."""
        return f"{self.subject_prefix}gateway.{name}"

    @property
    def subject_filter(self) -> str:
        return f"{self.subject_prefix}events.>"
