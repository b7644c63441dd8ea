"""What the fault tests share: an HTTP client that survives its server dying, SSE frame reading that
can be cut anywhere, and the checks of the log and read models every fault must leave intact."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import aiohttp
import asyncpg

TERMINAL = {"completed", "failed", "cancelled", "expired", "incomplete"}
ACTIVE = {"queued", "in_progress", "requires_action", "cancelling"}
RUN_ENDINGS = {"RunCompleted", "RunIncomplete", "RunFailed", "RunCancelled", "RunExpired"}
TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "Look it up.",
                                           "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]
# Frames only the resumable streams send (see service/streams/frames.py).
NOT_FOR_SDKS = {"thread.updated", "thread.deleted", "thread.erased", "thread.message.updated",
                "thread.message.deleted", "thread.run.updated"}


def script_model(tmp_path, *turns: dict) -> str:
    path = tmp_path / f"script-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({"turns": list(turns)}))
    return f"builtin/script:{path}"


class Api:
    """Calls to one service process (`base` changes when the test switches processes)."""

    def __init__(self, http: aiohttp.ClientSession, key: str, base: str):
        self.http, self.key, self.base = http, key, base

    def headers(self, extra: dict | None = None) -> dict:
        return {"Authorization": f"Bearer {self.key}", **(extra or {})}

    async def call(self, method: str, path: str, body=None, headers: dict | None = None,
                   base: str | None = None) -> tuple[int, dict]:
        async with self.http.request(method, f"{base or self.base}/v1{path}", json=body,
                                     headers=self.headers(headers)) as r:
            return r.status, await r.json(content_type=None)

    async def ok(self, method: str, path: str, body=None, headers: dict | None = None, base: str | None = None):
        status, answer = await self.call(method, path, body, headers, base)
        assert status == 200, (method, path, status, answer)
        return answer

    async def until(self, path: str, check, timeout: float = 30.0, what: str | None = None) -> dict:
        """GET path until check(body) holds; connection errors count as not yet (a process restarting)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                status, last = await self.call("GET", path)
                if status == 200 and check(last):
                    return last
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            assert time.monotonic() < deadline, f"{what or path}: not reached in {timeout} s; last answer {last}"
            await asyncio.sleep(0.05)

    async def run_ended(self, thread_id: str, run_id: str, timeout: float = 30.0) -> dict:
        return await self.until(f"/threads/{thread_id}/runs/{run_id}", lambda r: r["status"] in TERMINAL,
                                timeout, what=f"run {run_id} ended")

    async def all_messages(self, thread_id: str) -> list[dict]:
        out, after = [], None
        while True:
            query = "?order=asc&limit=100" + (f"&after={after}" if after else "")
            page = await self.ok("GET", f"/threads/{thread_id}/messages{query}")
            out += page["data"]
            if not page["has_more"]:
                return out
            after = page["last_id"]


async def start_assistant_and_thread(api: Api, model: str, text: str = "go", tools=TOOLS) -> tuple[str, str]:
    assistant = await api.ok("POST", "/assistants", {"model": model, "tools": tools})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": text}]})
    return assistant["id"], thread["id"]


# --- server-sent events, read frame by frame ---------------------------------------------------

class FrameId(str):
    """A frame's `id:`, ordered as its stream is: `v.k` is the k-th frame of event v, plain `v` its last."""

    def _key(self) -> tuple[int, float]:
        version, _, k = self.partition(".")
        return int(version), int(k) if k else float("inf")

    def __lt__(self, other): return self._key() < FrameId(other)._key()
    def __le__(self, other): return self._key() <= FrameId(other)._key()
    def __gt__(self, other): return self._key() > FrameId(other)._key()
    def __ge__(self, other): return self._key() >= FrameId(other)._key()


@dataclass(frozen=True)
class Frame:
    id: FrameId | None
    event: str
    data: str

    @property
    def json(self):
        return json.loads(self.data)


@dataclass
class SseReader:
    """Frames of one SSE response as they arrive; `cut` is set when the connection broke."""
    frames: list[Frame] = field(default_factory=list)
    cut: bool = False
    done: bool = False

    @property
    def last_id(self) -> FrameId | None:
        ids = [f.id for f in self.frames if f.id is not None]
        return ids[-1] if ids else None

    async def read(self, resp: aiohttp.ClientResponse, stop=None) -> None:
        """Read complete frames until `done`, stop(frame), or the connection breaks."""
        buffer = b""
        try:
            async for piece in resp.content.iter_any():
                buffer += piece
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in block.decode().split("\n"))
                    frame = Frame(FrameId(fields["id"]) if "id" in fields else None, fields["event"], fields["data"])
                    if frame.event == "done":
                        self.done = True
                        return
                    if frame.event != "ping":
                        self.frames.append(frame)
                    if stop is not None and stop(frame):
                        return
        except (aiohttp.ClientError, ConnectionError):
            self.cut = True
            return
        self.cut = True      # the body ended without `done`: the server went away


async def follow_resuming(api: Api, path: str, stop, timeout: float = 60.0) -> tuple[list[Frame], int]:
    """Follow an SSE stream as a reconnecting client does (EventSource): whenever it breaks or is
    refused, connect again with Last-Event-ID, until stop(frame). (every frame, connections made)"""
    frames: list[Frame] = []
    connections = 0
    async with asyncio.timeout(timeout):
        while True:
            last = next((f.id for f in reversed(frames) if f.id is not None), None)
            headers = api.headers({} if last is None else {"Last-Event-ID": str(last)})
            reader = SseReader()
            try:
                async with api.http.get(f"{api.base}/v1{path}", headers=headers) as r:
                    if r.status == 200:
                        connections += 1
                        await reader.read(r, stop)
            except (aiohttp.ClientError, ConnectionError):
                pass
            frames += reader.frames
            if frames and stop(frames[-1]):
                return frames, connections
            await asyncio.sleep(0.2)        # a client's reconnection delay


def delta_text(frames: list[Frame], message_id: str | None = None) -> str:
    return "".join(f.json["delta"]["content"][0]["text"]["value"] for f in frames
                   if f.event == "thread.message.delta" and (message_id is None or f.json["id"] == message_id))


# --- what every fault must leave intact ---------------------------------------------------------

async def check_threads(pool: asyncpg.Pool, thread_ids) -> dict[str, list[asyncpg.Record]]:
    """Each thread's log: versions contiguous from 1; never two active runs at once; every run
    ended exactly once; no message or run recorded twice; the read models hold exactly what the log
    says (messages created and not deleted, runs with the status their last event gave them).
    Returns each thread's events (type, version, data, request_id: what the client called its request)."""
    out = {}
    for thread_id in thread_ids:
        rows = await pool.fetch(
            """SELECT type, version, data, metadata->>'client_request_id' AS request_id FROM events
               WHERE stream = $1 ORDER BY version""", f"thread-{thread_id}")
        assert [r["version"] for r in rows] == list(range(1, len(rows) + 1)), f"{thread_id}: versions not contiguous"
        active: str | None = None
        created_messages: list[str] = []
        deleted: set[str] = set()
        runs: dict[str, str] = {}
        for r in rows:
            data = json.loads(r["data"])
            if r["type"] == "MessageCreated":
                created_messages.append(data["message_id"])
            elif r["type"] == "MessageDeleted":
                deleted.add(data["message_id"])
            elif r["type"] == "RunCreated":
                assert active is None, f"{thread_id} v{r['version']}: run {data['run_id']} created while {active} active"
                assert data["run_id"] not in runs, f"{thread_id}: run {data['run_id']} created twice"
                active = data["run_id"]
                runs[active] = "active"
            elif r["type"] in RUN_ENDINGS:
                assert data["run_id"] == active, f"{thread_id} v{r['version']}: {r['type']} of a run not active"
                runs[active] = r["type"]
                active = None
        assert active is None, f"{thread_id}: run {active} never ended"
        assert len(created_messages) == len(set(created_messages)), f"{thread_id}: a message was created twice"
        in_model = {r[0] for r in await pool.fetch("SELECT id FROM messages WHERE thread_id = $1", thread_id)}
        assert in_model == set(created_messages) - deleted, f"{thread_id}: messages read model differs from the log"
        statuses = dict(await pool.fetch("SELECT id, status FROM runs WHERE thread_id = $1", thread_id))
        assert set(statuses) == set(runs), f"{thread_id}: runs read model differs from the log"
        assert not [s for s in statuses.values() if s in ACTIVE], f"{thread_id}: a run is still active: {statuses}"
        out[thread_id] = rows
    return out


async def check_no_leases(pool: asyncpg.Pool, thread_ids, timeout: float = 10.0) -> None:
    """No lease outlives its run for long: a running service clears those its holder could not let go."""
    deadline = time.monotonic() + timeout
    while rows := await pool.fetch("SELECT run_id FROM run_leases WHERE thread_id = ANY($1::text[])",
                                   list(thread_ids)):
        assert time.monotonic() < deadline, f"leases left behind: {rows}"
        await asyncio.sleep(0.05)
