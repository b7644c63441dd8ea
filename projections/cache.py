"""Agents cached in each process for creating runs: a run's first event waits for one round trip
to Postgres (its commit) instead of two.

The cache forgets an agent when it changes: at once for a change this process commits, and when
another process's change is announced (its append's NOTIFY, normally within a millisecond). When
announcements may have been missed (the LISTEN connection was reopened) it forgets everything.
An entry also lives at most `ttl` seconds, which bounds how stale it can be if an announcement
never arrives.
"""

from __future__ import annotations

import time
from typing import Iterable

from projections import queries

AGENT = "agent-"


class AgentCache:
    def __init__(self, ttl: float = 5.0, max_entries: int = 10_000):
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[tuple[str, str], tuple[float, str]] = {}
        self._changes = 0          # counts forgets: a read that a change overtook is not kept

    async def get(self, db, project: str, agent_id: str) -> str | None:
        """The agent's read-model JSON, as queries.get_agent answers it."""
        hit = self._entries.get((project, agent_id))
        now = time.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        changes = self._changes
        data = await queries.get_agent(db, project, agent_id)
        if data is not None and changes == self._changes:
            if len(self._entries) >= self.max_entries:
                self._entries.clear()
            self._entries[(project, agent_id)] = (now + self.ttl, data)
        return data

    def forget(self, streams: Iterable[str] | None) -> None:
        """These streams changed (None: any may have)."""
        if streams is None:
            self._changes += 1
            self._entries.clear()
            return
        agents = {s[len(AGENT):] for s in streams if s.startswith(AGENT)}
        if agents:
            self._changes += 1
            for key in [k for k in self._entries if k[1] in agents]:
                del self._entries[key]
