"""Property-based tests of the whole API from its own /openapi.json (schemathesis), against a real
`threadline serve`: no request gets a 5xx, every response matches the documented schema (status,
content type, body), every error is the OpenAI envelope, and data outside the schema is refused with a 4xx.

Generated path ids are swapped for ids of real objects half the time, so requests reach the code past
the 404s; destructive operations get a fresh object each so the others keep finding theirs.
Bounded and derandomized, so CI sees the same examples every run."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
import zlib

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance, negative_data_rejection, response_schema_conformance, status_code_conformance,
)
from schemathesis.checks import not_a_server_error

from conftest import ServiceProcess, fresh_database, new_key
from service import database
from service.api.openapi import openapi_document

MAX_EXAMPLES = 25
ENVELOPE_KEYS = {"message", "type", "param", "code"}


class World:
    """A served app, a key, and real objects for the generated requests to hit."""

    def __init__(self, url: str, key: str):
        self.url, self.key = url, key
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {key}"
        self.ids: dict[str, str] = {}

    def post(self, path: str, body=None, **kw) -> dict:
        r = self.http.post(f"{self.url}/v1{path}", json=body, timeout=30, **kw)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    def wait_run(self, thread: str, run: str) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            body = self.http.get(f"{self.url}/v1/threads/{thread}/runs/{run}", timeout=10).json()
            if body["status"] in ("completed", "failed", "cancelled", "expired", "incomplete", "requires_action"):
                return body
            time.sleep(0.05)
        raise AssertionError(f"run {run} did not end")

    def seed(self) -> None:
        asst = self.post("/assistants", {"model": "builtin/echo", "name": "fuzz"})["id"]
        f = self.http.post(f"{self.url}/v1/files", files={"file": ("a.txt", b"abc")},
                           data={"purpose": "assistants"}, timeout=30).json()["id"]
        thread = self.post("/threads", {"messages": [{"role": "user", "content": "hello there"}]})["id"]
        msg = self.post(f"/threads/{thread}/messages", {"role": "user", "content": "one more"})["id"]
        run = self.post(f"/threads/{thread}/runs", {"assistant_id": asst})["id"]
        self.wait_run(thread, run)
        steps = self.http.get(f"{self.url}/v1/threads/{thread}/runs/{run}/steps", timeout=10).json()["data"]
        webhook = self.post("/webhooks", {"url": "http://127.0.0.1:9/hook", "events": ["thread.run.completed"]})["id"]
        self.ids = {"assistant_id": asst, "file_id": f, "thread_id": thread, "message_id": msg, "run_id": run,
                    "step_id": steps[0]["id"], "webhook_id": webhook, "delivery_id": "whd_none"}

    def victim(self, operation: str) -> dict[str, str]:
        """Fresh objects for an operation that deletes or erases what it names."""
        ids = dict(self.ids)
        if "/assistants/" in operation:
            ids["assistant_id"] = self.post("/assistants", {"model": "builtin/echo"})["id"]
        if "/files/" in operation:
            ids["file_id"] = self.http.post(f"{self.url}/v1/files", files={"file": ("v.txt", b"v")},
                                            data={"purpose": "assistants"}, timeout=30).json()["id"]
        if "/webhooks/" in operation:
            ids["webhook_id"] = self.post("/webhooks", {"url": "http://127.0.0.1:9/v", "events": ["*"]})["id"]
        if "/threads/" in operation:
            ids["thread_id"] = self.post("/threads", {"messages": [{"role": "user", "content": "v"}]})["id"]
            ids["message_id"] = self.post(f"/threads/{ids['thread_id']}/messages",
                                          {"role": "user", "content": "w"})["id"]
        return ids


@pytest.fixture(scope="module")
def world(server_url):
    async def prepare():
        url = await fresh_database(server_url)
        pool = await database.connect(url, 2)
        try:
            await database.prepare(pool)
            return url, await new_key(pool, f"fuzz-{uuid.uuid4().hex[:8]}")
        finally:
            await pool.close()

    url, key = asyncio.run(prepare())
    proc = ServiceProcess(url, env={"THREADLINE_WEBHOOK_ALLOW_HTTP": "1",
                                    "THREADLINE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8",
                                    "THREADLINE_STREAM_KEEPALIVE_SECONDS": "1"})
    try:
        w = World(proc.url, key)
        w.seed()
        yield w
    finally:
        proc.stop()


# The document /openapi.json serves (test_the_served_document_is_this_one checks that): loaded at import
# so pytest gets one test per operation.
schema = schemathesis.openapi.from_dict(openapi_document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=MAX_EXAMPLES, deterministic=True, database="none",
                                with_security_parameters=False,
                                # Unknown query parameters are ignored on purpose (the SDKs add their own,
                                # such as api-version), so sending one is not schema-violating data.
                                allow_extra_parameters=False)


def test_the_served_document_is_this_one(world):
    served = requests.get(f"{world.url}/openapi.json", timeout=10)
    assert served.status_code == 200 and served.json() == json.loads(json.dumps(openapi_document()))


def check_envelope(ctx, response, case):
    """Every error is the OpenAI envelope with exactly its four keys."""
    if response.status_code < 400:
        return None
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.headers
    body = json.loads(response.content)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert set(body["error"]) == ENVELOPE_KEYS, body
    err = body["error"]
    assert isinstance(err["message"], str) and err["message"], body
    assert isinstance(err["type"], str) and err["type"], body
    assert err["param"] is None or isinstance(err["param"], str), body
    assert err["code"] is None or isinstance(err["code"], str), body
    return True


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, check_envelope]
_requests = itertools.count()


def fresh_idempotency_key(case) -> None:
    """Generated keys repeat across examples, and a reused key with other parameters is (rightly) a 400:
    a unique suffix lets valid requests get past it to the handler."""
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and case.meta.generation.mode.is_positive and len(key) < 240:
        case.headers["Idempotency-Key"] = f"{key}-{next(_requests)}"


def real_ids(world: World, case) -> None:
    """Swap generated path ids for real ones on about half of the examples (chosen from the generated
    values, so the choice is as deterministic as they are)."""
    if not case.path_parameters:
        return
    if zlib.crc32(json.dumps(case.path_parameters, sort_keys=True, default=str).encode()) % 2:
        return
    label = f"{case.method} {case.path}"
    ids = world.victim(label) if case.method == "DELETE" or label.endswith("/erase") else world.ids
    for name in case.path_parameters:
        if name in ids:
            case.path_parameters[name] = ids[name]


@schema.parametrize()
@hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_api_matches_its_openapi_document(case, world):
    real_ids(world, case)
    fresh_idempotency_key(case)
    # A thread's event stream stays open for good: schemathesis reads it until this timeout.
    timeout = 1.5 if case.path.endswith("/stream") else 30
    case.call_and_validate(base_url=f"{world.url}/v1", checks=CHECKS,
                           headers={"Authorization": f"Bearer {world.key}"}, timeout=timeout)
