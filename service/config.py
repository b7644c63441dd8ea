"""Configuration from the environment. Every setting is listed in the README."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return value.strip().lower() in ("1", "true", "yes", "on") if value else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True)
class Config:
    database_url: str | None
    data_dir: Path
    max_body_bytes: int
    max_file_bytes: int
    actor_idle_seconds: float
    max_actors: int
    db_pool_size: int
    upload_connections: int
    log_format: str
    run_expiry_seconds: int = 600
    run_lease_seconds: float = 15.0
    run_sweep_seconds: float = 1.0
    max_tool_rounds: int = 20
    allow_unexecuted_tools: bool = False     # store tool types the server does not run (old, lenient behaviour)
    shutdown_grace_seconds: float = 20.0
    stream_keepalive_seconds: float = 15.0
    poll_wait_seconds: float = 5.0           # an SDK poll of an active run is answered when it ends, or after this
    retention_days: float = 0.0
    retention_sweep_seconds: float = 3600.0
    webhook_allow_http: bool = False
    webhook_allow_networks: str = ""         # e.g. "127.0.0.0/8,::1/128": addresses otherwise refused
    webhook_timeout_seconds: float = 10.0
    webhook_connect_timeout_seconds: float = 5.0
    webhook_first_retry_seconds: float = 2.0
    webhook_max_retry_delay_seconds: float = 3600.0
    webhook_retry_window_seconds: float = 86_400.0
    webhook_concurrency: int = 64            # attempts in flight per subscription (one per thread)
    webhook_delivery_retention_days: float = 30.0
    file_sweep_seconds: float = 60.0         # how often expired uploads (and their parts) are swept

    @classmethod
    def from_env(cls) -> "Config":
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(os.environ.get("THREADLINE_DATA_DIR", ".threadline")).resolve(),
            max_body_bytes=_int("THREADLINE_MAX_BODY_BYTES", 8 * 1024 * 1024),
            max_file_bytes=_int("THREADLINE_MAX_FILE_BYTES", 512 * 1024 * 1024),
            actor_idle_seconds=_float("THREADLINE_ACTOR_IDLE_SECONDS", 300.0),
            max_actors=_int("THREADLINE_MAX_ACTORS", 10_000),
            db_pool_size=_int("THREADLINE_DB_POOL_SIZE", 16),
            upload_connections=_int("THREADLINE_UPLOAD_CONNECTIONS", 4),
            log_format=os.environ.get("THREADLINE_LOG_FORMAT", "auto"),
            run_expiry_seconds=_int("THREADLINE_RUN_EXPIRY_SECONDS", 600),
            run_lease_seconds=_float("THREADLINE_RUN_LEASE_SECONDS", 15.0),
            run_sweep_seconds=_float("THREADLINE_RUN_SWEEP_SECONDS", 1.0),
            max_tool_rounds=_int("THREADLINE_MAX_TOOL_ROUNDS", 20),
            allow_unexecuted_tools=_bool("THREADLINE_ALLOW_UNEXECUTED_TOOLS", False),
            shutdown_grace_seconds=_float("THREADLINE_SHUTDOWN_GRACE_SECONDS", 20.0),
            stream_keepalive_seconds=_float("THREADLINE_STREAM_KEEPALIVE_SECONDS", 15.0),
            poll_wait_seconds=_float("THREADLINE_POLL_WAIT_SECONDS", 5.0),
            retention_days=_float("THREADLINE_RETENTION_DAYS", 0.0),
            retention_sweep_seconds=_float("THREADLINE_RETENTION_SWEEP_SECONDS", 3600.0),
            webhook_allow_http=_bool("THREADLINE_WEBHOOK_ALLOW_HTTP", False),
            webhook_allow_networks=os.environ.get("THREADLINE_WEBHOOK_ALLOW_NETWORKS", ""),
            webhook_timeout_seconds=_float("THREADLINE_WEBHOOK_TIMEOUT_SECONDS", 10.0),
            webhook_connect_timeout_seconds=_float("THREADLINE_WEBHOOK_CONNECT_TIMEOUT_SECONDS", 5.0),
            webhook_first_retry_seconds=_float("THREADLINE_WEBHOOK_FIRST_RETRY_SECONDS", 2.0),
            webhook_max_retry_delay_seconds=_float("THREADLINE_WEBHOOK_MAX_RETRY_DELAY_SECONDS", 3600.0),
            webhook_retry_window_seconds=_float("THREADLINE_WEBHOOK_RETRY_WINDOW_SECONDS", 86_400.0),
            webhook_concurrency=_int("THREADLINE_WEBHOOK_CONCURRENCY", 64),
            webhook_delivery_retention_days=_float("THREADLINE_WEBHOOK_DELIVERY_RETENTION_DAYS", 30.0),
            file_sweep_seconds=_float("THREADLINE_FILE_SWEEP_SECONDS", 60.0),
        )
