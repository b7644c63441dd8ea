"""Crypto-shredding: a thread's conversation content is stored in the log encrypted with a key of
its own, kept apart from the log (table `thread_keys`). Destroying the key erases the content
everywhere the log is kept — backups and replicas included — while the rows, their ids and the
hash chain (computed over the ciphertext) stay intact and verifiable.

Only the string fields that carry content are encrypted (message text, tool-call arguments and
outputs, run instructions), so ids, types and the shape of every event stay readable: a thread's
history can still be folded after erasure, with "[erased]" where its words were.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache
from typing import Any, Iterator

import asyncpg
import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.types import EVENT_TYPES, SEALED

PREFIX = "enc:v1:"
ERASED = "[erased]"

def sealed_paths(cls: type) -> tuple[tuple[str, ...], ...]:
    """Paths into an event's JSON to its content strings, from the `Sealed` and `seals(...)` marks
    on its fields and on the types inside them."""
    return tuple(dict.fromkeys(_walk(msgspec.inspect.type_info(cls))))


def _walk(info: Any, at: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(info, msgspec.inspect.Metadata):
        mark = (info.extra or {}).get(SEALED)
        if mark is True:
            yield at
        elif mark:
            yield from (at + path for path in mark)
        else:
            yield from _walk(info.type, at)
    elif isinstance(info, msgspec.inspect.StructType):
        for field in info.fields:
            yield from _walk(field.type, at + (field.encode_name,))
    elif isinstance(info, (msgspec.inspect.ListType, msgspec.inspect.VarTupleType)):
        yield from _walk(info.item_type, at + ("*",))
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            yield from _walk(member, at)


# Paths into an event's JSON to the strings that carry content ("*": every item of a list), by event
# type name; derived from the marks in events/types.py.
SECRET_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    name: paths for name, cls in EVENT_TYPES.items() if (paths := sealed_paths(cls))}


@lru_cache(maxsize=4096)
def _aes(key: bytes) -> AESGCM:
    return AESGCM(key)


def thread_of(stream: str) -> str | None:
    return stream[7:] if stream.startswith("thread-") else None


def _leaves(node: Any, path: tuple[str, ...]) -> Iterator[tuple[Any, Any]]:
    """(container, key) of every string the path reaches."""
    if not path or node is None:
        return
    head, rest = path[0], path[1:]
    if head == "*":
        if isinstance(node, list):
            for i, item in enumerate(node):
                if rest:
                    yield from _leaves(item, rest)
                elif isinstance(item, str):
                    yield node, i
        return
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        yield from _leaves(node[head], rest)
    elif isinstance(node[head], str):
        yield node, head


def seal(doc: dict, type_name: str, key: bytes, stream: str) -> bool:
    """Encrypt the content strings of an event's JSON document in place; whether any were."""
    sealed = False
    aes = _aes(key)
    for path in SECRET_PATHS.get(type_name, ()):
        for container, k in _leaves(doc, path):
            nonce = os.urandom(12)
            blob = nonce + aes.encrypt(nonce, container[k].encode(), stream.encode())
            container[k] = PREFIX + base64.b64encode(blob).decode()
            sealed = True
    return sealed


def unseal(doc: dict, type_name: str, key: bytes | None, stream: str) -> None:
    """Decrypt in place; with no key (erased) the content reads "[erased]"."""
    aes = _aes(key) if key is not None else None
    for path in SECRET_PATHS.get(type_name, ()):
        for container, k in _leaves(doc, path):
            value = container[k]
            if not value.startswith(PREFIX):
                continue
            if aes is None:
                container[k] = ERASED
                continue
            blob = base64.b64decode(value[len(PREFIX):])
            container[k] = aes.decrypt(blob[:12], blob[12:], stream.encode()).decode()


class KeyRing:
    """Per-thread content keys, cached in memory. A destroyed key reads as None."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes | None] = {}

    def forget(self, thread_id: str) -> None:
        self._keys.pop(thread_id, None)
        _aes.cache_clear()      # no cipher object keeps an erased key alive in memory

    async def keys(self, conn, thread_ids: set[str], create: set[str] = frozenset()) -> dict[str, bytes | None]:
        """Keys of these threads; threads in `create` get one if they have none."""
        missing = [t for t in thread_ids if t not in self._keys]
        if missing:
            new = [t for t in missing if t in create]
            rows = await conn.fetch(
                """WITH made AS (
                       INSERT INTO thread_keys (thread_id, key)
                       SELECT * FROM unnest($2::text[], $3::bytea[]) ON CONFLICT DO NOTHING
                       RETURNING thread_id, key)
                   SELECT thread_id, key FROM made
                   UNION ALL
                   SELECT thread_id, key FROM thread_keys
                   WHERE thread_id = ANY($1::text[]) AND thread_id NOT IN (SELECT thread_id FROM made)""",
                missing, new, [AESGCM.generate_key(bit_length=256) for _ in new])
            found = {r[0]: (bytes(r[1]) if r[1] is not None else None) for r in rows}
            for t in missing:
                if t in found:
                    self._keys[t] = found[t]
        return {t: self._keys[t] for t in thread_ids if t in self._keys}


async def destroy(db: asyncpg.Pool, thread_id: str) -> bool:
    """Erase a thread's key for good; whether there was one to erase."""
    done = await db.fetchval(
        "UPDATE thread_keys SET key = NULL, destroyed_at = now() WHERE thread_id = $1 AND key IS NOT NULL "
        "RETURNING true", thread_id)
    return bool(done)
