"""The tail of a thread that a run reads, and a per-process cache of it. Pure: no I/O.

A run reads its thread's messages from the newest back, in pages of 50, 200, 800 and then 2,000,
until what it has read fills the token budget, holds the `last_messages` it keeps, or reaches the
thread's first message (`tail_length`). On a long thread that is thousands of messages to read,
decode and count for every run, although one run reads nearly the tail the previous one read.

So a `Tail` (those messages as chat messages, with their token counts) outlives the run in a
`TailCache`. It is valid at one version of the thread's event stream; the next run brings it up to
date from the events appended since, which name every message created, completed, changed or
deleted, and re-reads only those (`merge`). Whether a message comes from the cache or from
Postgres, the run sees the same tail, so the model is sent the same prompt.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Iterator

JSON = dict[str, Any]

FIRST_PAGE = 50
LAST_PAGE = 2000
# Across all threads. Messages bound the cache's structure (about 300 bytes each), tokens its text
# (about 4 bytes each): together some 160 MB at most.
MAX_CACHED_MESSAGES = 200_000
MAX_CACHED_TOKENS = 25_000_000


@dataclass(slots=True)
class Entry:
    """One message of a tail. Runs share it: nothing changes it in place, a change replaces it."""
    id: str
    chat: JSON                  # as chat message, without image files (they are loaded for each run)
    tokens: int                 # of `chat`
    message: JSON | None        # the API message's role and content, kept only when it shows an image file


@dataclass
class Tail:
    """The newest messages of a thread: every message whose id is at least the first entry's."""
    encoding: str               # the token counts' encoding
    version: int                # the thread stream's version the entries are current with
    entries: list[Entry] = field(default_factory=list)     # oldest first
    at_start: bool = False      # the entries begin with the thread's first message
    wanted: int = 0             # the most messages a run has read of it
    tokens: int = 0             # of all the entries

    @property
    def floor(self) -> str | None:
        """Older messages than this one are not in the tail (None: nothing is known)."""
        return self.entries[0].id if self.entries else None


_tokens = attrgetter("tokens")
_id = attrgetter("id")


def pages() -> Iterator[int]:
    """Sizes of the pages a tail is read in: a long thread is read further in bigger pages."""
    size = FIRST_PAGE
    while True:
        yield size
        size = min(size * 4, LAST_PAGE)


def tail_length(tail: Tail, budget: int, keep: int | None) -> int | None:
    """How many of the newest messages a run reads: whole pages until their tokens reach `budget`,
    they number `keep` or more, or the thread has no more. None: the tail must be read further first."""
    entries = tail.entries
    known = len(entries)
    read = tokens = 0
    for size in pages():
        end = read + size
        if end >= known:
            if tail.at_start:
                return known
            if end > known:
                return None
        tokens += sum(map(_tokens, entries[known - end:known - read]))
        read = end
        if tokens >= budget or (keep is not None and read >= keep):
            return read
    raise AssertionError("unreachable")


def prepend_older(tail: Tail, older: list[Entry], page_size: int) -> None:
    """Add a page read from just before the tail's floor (newest first); a short page is the thread's start."""
    tail.entries[:0] = reversed(older)
    tail.tokens += sum(map(_tokens, older))
    if len(older) < page_size:
        tail.at_start = True


def merge(tail: Tail, touched: set[str], current: list[Entry], version: int) -> None:
    """Bring the tail to `version`: `touched` are the messages the events since changed, `current`
    those of them that still exist, as they are now. A message older than the floor stays out."""
    found = {e.id for e in current}
    for gone in touched - found:
        at = _find(tail.entries, gone)
        if at is not None:
            tail.tokens -= tail.entries.pop(at).tokens
    for entry in sorted(current, key=_id):
        floor = tail.floor
        if floor is None and not tail.at_start:
            break       # an empty tail knows no floor; reading it again finds these
        if floor is not None and entry.id < floor and not tail.at_start:
            continue
        at = _find(tail.entries, entry.id)
        if at is not None:
            tail.tokens -= tail.entries[at].tokens
            tail.entries[at] = entry
        else:
            tail.entries.insert(bisect.bisect_left(tail.entries, entry.id, key=_id), entry)
        tail.tokens += entry.tokens
    tail.version = version


def _find(entries: list[Entry], message_id: str) -> int | None:
    at = bisect.bisect_left(entries, message_id, key=_id)
    return at if at < len(entries) and entries[at].id == message_id else None


def read_from(tail: Tail, length: int) -> list[Entry]:
    """The newest `length` entries, which a run reads. The tail then forgets the older ones that
    no run has read: it keeps what the runs on this thread read, not all its new messages."""
    entries = tail.entries[len(tail.entries) - length:]
    tail.wanted = max(tail.wanted, length)
    drop = len(tail.entries) - tail.wanted
    if drop > 0:
        tail.tokens -= sum(map(_tokens, tail.entries[:drop]))
        del tail.entries[:drop]
        tail.at_start = False
    return entries


class TailCache:
    """Thread id -> its Tail, least recently used first, holding at most `max_messages` and
    `max_tokens` in all.

    A run takes its thread's tail out while it updates it and puts it back after, so two executions
    never change one tail together (the second just reads its own)."""

    def __init__(self, max_messages: int = MAX_CACHED_MESSAGES, max_tokens: int = MAX_CACHED_TOKENS):
        self.max_messages, self.max_tokens = max_messages, max_tokens
        self._tails: OrderedDict[str, Tail] = OrderedDict()
        self._messages = self._tokens = 0

    def __len__(self) -> int:
        return len(self._tails)

    def __contains__(self, thread_id: str) -> bool:
        return thread_id in self._tails

    def take(self, thread_id: str) -> Tail | None:
        tail = self._tails.pop(thread_id, None)
        if tail is not None:
            self._messages -= len(tail.entries)
            self._tokens -= tail.tokens
        return tail

    def put(self, thread_id: str, tail: Tail) -> None:
        self.drop(thread_id)
        if len(tail.entries) > self.max_messages or tail.tokens > self.max_tokens:
            return
        self._tails[thread_id] = tail
        self._messages += len(tail.entries)
        self._tokens += tail.tokens
        while self._messages > self.max_messages or self._tokens > self.max_tokens:
            self.take(next(iter(self._tails)))

    def drop(self, thread_id: str) -> None:
        self.take(thread_id)
