"""OpenAI-style ids whose text order is creation order, so ids double as keyset cursors.

24 characters of lower-case Crockford base32: 48 bits of milliseconds then 72 random bits.
Within one process, ids made in the same millisecond still increase.
"""

from __future__ import annotations

import base64
import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _body() -> str:
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms, rand = _last_ms, _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(9), "big") >> 1   # headroom for increments
        _last_ms, _last_rand = ms, rand
    n = (ms << 72) | (rand & ((1 << 72) - 1))
    # 120 bits are 24 base32 digits: the standard encoder, its alphabet swapped for Crockford's.
    return base64.b32encode(n.to_bytes(15, "big")).translate(_CROCKFORD).decode()


def new_id(prefix: str) -> str:
    """`new_id("msg_")` -> 'msg_01hv…'."""
    return prefix + _body()


def now() -> int:
    return int(time.time())
