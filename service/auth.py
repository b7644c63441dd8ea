"""API keys: made here, shown once, stored only as SHA-256 digests, looked up with a short cache."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import asyncpg

from service.ids import new_id

KEY_PREFIX = "tl-"
PROJECT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    project: str


def digest(key: str) -> bytes:
    # Keys are 256 random bits, so a plain hash is enough: there is nothing to guess.
    return hashlib.sha256(key.encode()).digest()


async def create_key(conn: asyncpg.Connection, project: str) -> tuple[str, str]:
    """Create the project if needed and a key for it; returns (key id, key)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key_")
    async with conn.transaction():
        await conn.execute("INSERT INTO projects (name) VALUES ($1) ON CONFLICT DO NOTHING", project)
        await conn.execute("INSERT INTO api_keys (id, project, digest) VALUES ($1, $2, $3)",
                           key_id, project, digest(key))
    return key_id, key


async def bootstrap_default_project(conn: asyncpg.Connection) -> str | None:
    """On a fresh install, make project `default` and return its first key (else None)."""
    async with conn.transaction():
        await conn.execute("LOCK TABLE projects IN EXCLUSIVE MODE")  # two first starts make one key
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM projects)"):
            return None
        _, key = await create_key(conn, "default")
        return key


class KeyCache:
    """Key digest -> principal, for a few seconds, so requests skip a round trip."""

    def __init__(self, ttl: float = 30.0, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal | None]] = {}

    async def lookup(self, db, key: str) -> Principal | None:
        d = digest(key)
        hit = self._entries.get(d)
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        row = await db.fetchrow(
            "SELECT id, project FROM api_keys WHERE digest = $1 AND revoked_at IS NULL", d)
        principal = Principal(row[0], row[1]) if row else None
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[d] = (now + self.ttl, principal)
        return principal
