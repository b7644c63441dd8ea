"""Secrets never reach the log: a real `threadline serve` goes through a workload that handles every
kind of secret it knows (API keys in each place a client may put them, right and wrong; webhook
signing secrets at creation and rotation, with failing deliveries; provider keys, with provider
errors that echo them back), then the whole log file is searched for each secret and its obvious
encodings."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import secrets
import urllib.parse
import uuid
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from conftest import ServiceProcess, fresh_database, new_key, until
from fake_openai import FakeOpenAI, error_reply, text_reply
from service import database
from service.config import configured_secrets
from service.observability import Redactor, RedactingFormatter

TERMINAL = ("completed", "failed", "cancelled", "expired", "incomplete")


def encodings(secret: str) -> set[str]:
    """The secret as a log line could carry it."""
    raw = secret.encode()
    forms = {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
             raw.hex(), json.dumps(secret)[1:-1]}
    # The distinctive part alone, without its well-known prefix (tl-, whsec_, sk-).
    for prefix in ("tl-", "whsec_", "sk-"):
        if secret.startswith(prefix):
            forms.add(secret.removeprefix(prefix))
    return forms


def leaks(log: str, named: dict[str, str]) -> list[str]:
    return [f"{name}: {form!r}" for name, secret in named.items() for form in encodings(secret) if form in log]


class Hook:
    """A webhook receiver that refuses every delivery, so retries and failures are logged paths too."""

    def __init__(self):
        self.hits = 0
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.server = TestServer(app, host="127.0.0.1")

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        await request.read()
        return web.Response(status=500, text="receiver failure")


def test_encodings_are_found():
    """The scan itself: a secret written in any of its forms is caught."""
    s = "tl-" + secrets.token_urlsafe(32)
    for form in encodings(s):
        assert leaks(f'{{"event":"x","v":"{form}"}}', {"k": s}), form
    assert leaks("nothing here", {"k": s}) == []


async def test_no_secret_reaches_the_log(server_url, tmp_path):
    url = await fresh_database(server_url)
    pool = await database.connect(url, 2)
    try:
        await database.prepare(pool)
        project = f"sec-{uuid.uuid4().hex[:8]}"
        key = await new_key(pool, project)
    finally:
        await pool.close()

    provider_key = "sk-" + secrets.token_urlsafe(24)
    table_key = "sk-table-" + secrets.token_urlsafe(24)
    wrong_keys = {f"wrong key {i}": "tl-" + secrets.token_urlsafe(32) for i in range(3)}
    fake = await FakeOpenAI().start()
    hook = Hook()
    await hook.server.start_server()
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": {"tabled": {"base_url": fake.url, "api_key_env": "TL_TEST_TABLE_KEY",
                                                        "max_attempts": 2, "retry_base_delay": 0.01}}}))
    proc = await asyncio.to_thread(ServiceProcess, url, env={
        "OPENAI_API_KEY": provider_key, "OPENAI_BASE_URL": fake.url, "TL_TEST_TABLE_KEY": table_key,
        "THREADLINE_MODELS": str(models), "THREADLINE_WEBHOOK_ALLOW_HTTP": "1",
        "THREADLINE_WEBHOOK_ALLOW_NETWORKS": "127.0.0.0/8", "THREADLINE_WEBHOOK_FIRST_RETRY_SECONDS": "0.05",
        "THREADLINE_WEBHOOK_MAX_RETRY_DELAY_SECONDS": "0.1", "THREADLINE_STREAM_KEEPALIVE_SECONDS": "0.2",
        "OTEL_TRACES_EXPORTER": "console"})      # spans (request URLs among their attributes) go to the log too
    webhook_secrets: dict[str, str] = {}
    try:
        async with aiohttp.ClientSession(proc.url) as http:
            bearer = {"Authorization": f"Bearer {key}"}

            async def call(method, path, body=None, headers=bearer, expect=200):
                async with http.request(method, "/v1" + path, json=body, headers=headers) as r:
                    data = await r.json()
                    assert r.status == expect, (method, path, r.status, data)
                    return data

            # API keys: the Authorization header, the api-key header, ?api_key= on a stream; and wrong ones.
            thread = (await call("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]}))["id"]
            await call("GET", f"/threads/{thread}", headers={"api-key": key})
            async with http.get(f"/v1/threads/{thread}/stream", params={"api_key": key}) as r:
                assert r.status == 200
                assert b"thread.created" in await r.content.readuntil(b"\n\n")
            for i, (name, wrong) in enumerate(wrong_keys.items()):
                headers = [{"Authorization": f"Bearer {wrong}"}, {"api-key": wrong}, {}][i]
                params = {"api_key": wrong} if i == 2 else None
                async with http.get(f"/v1/threads/{thread}/stream", headers=headers, params=params) as r:
                    assert r.status == 401, name
                    assert (await r.json())["error"]["code"] == "invalid_api_key"
            await call("GET", "/threads", headers={"Authorization": f"Basic {key}"}, expect=401)

            # Webhook secrets: made at creation, remade by a rotation; every delivery fails and is retried.
            hook_url = f"http://127.0.0.1:{hook.server.port}/hook"
            created = await call("POST", "/webhooks", {"url": hook_url, "events": ["*"]})
            webhook_secrets["webhook secret"] = created["secret"]
            rotated = await call("POST", f"/webhooks/{created['id']}", {"rotate_secret": True})
            webhook_secrets["rotated webhook secret"] = rotated["secret"]
            assert rotated["secret"] != created["secret"]
            refused = await call("POST", "/webhooks", {"url": "http://127.0.0.1:9/closed", "events": ["*"]})
            webhook_secrets["secret of a webhook nobody hears"] = refused["secret"]

            # Provider keys: a run that works, and provider errors that echo the key back as a careless
            # proxy would (one retried, then a refusal that fails the run).
            echoed = f"Incorrect API key provided: {provider_key} (header 'Authorization: Bearer {provider_key}')"
            fake.script(text_reply("fine"), error_reply(500, echoed), error_reply(401, echoed, code="invalid_api_key"))
            fake.script_for("tabled", error_reply(503, f"upstream said no to {table_key}"))
            statuses = []
            for model in ("gpt-4o-mini", "gpt-4o-mini", "tabled"):
                asst = (await call("POST", "/assistants", {"model": model}))["id"]
                run = await call("POST", f"/threads/{thread}/runs", {"assistant_id": asst})

                async def ended(run_id=run["id"]):
                    r = await call("GET", f"/threads/{thread}/runs/{run_id}")
                    return r if r["status"] in TERMINAL else None
                statuses.append((await until(ended, what="the run to end", timeout=30))["status"])
            assert statuses == ["completed", "failed", "failed"], statuses
            sent = {r.headers.get("Authorization") for r in fake.requests}
            assert f"Bearer {provider_key}" in sent and f"Bearer {table_key}" in sent, sent

            async def failed_deliveries():
                page = await call("GET", f"/webhooks/{created['id']}/deliveries")
                return hook.hits >= 3 and any(d["attempt_count"] >= 2 for d in page["data"])
            await until(failed_deliveries, what="failed deliveries to be retried", timeout=30)
    finally:
        await asyncio.to_thread(proc.stop)
        await fake.close()
        await hook.server.close()

    log = proc.output
    # The workload reached the paths that could leak: wrong keys, retried provider errors, failed runs.
    lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"')]   # not the spans
    assert any(e.get("status") == 401 for e in lines), "no 401 was logged"
    assert any(e.get("event") == "model_call_retry" for e in lines), "no provider retry was logged"
    assert any(e.get("event") == "request" and "/stream" in e.get("path", "") for e in lines)
    found = leaks(log, {"API key": key, "provider key": provider_key, "models table key": table_key,
                        **wrong_keys, **webhook_secrets})
    assert not found, f"secrets in the service log: {found}"


def test_the_redactor_knows_secret_shapes_and_configured_values(tmp_path):
    """Unit level, for what the workload above cannot provoke: a database password in a URL, a secret
    named only by the models table, stdlib logging (aiohttp, openai) as well as structlog."""
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": {"m": {"base_url": "http://x", "api_key_env": "ODD_NAME"}}}))
    env = {"ODD_NAME": "s3cr3t-value-1", "PGPASSWORD": "p@ss/w0rd+xyz", "SHORT_TOKEN": "1", "HOME": "/root/somewhere",
           "THREADLINE_MODELS": str(models)}
    values = configured_secrets(env)
    assert values == {"s3cr3t-value-1", "p@ss/w0rd+xyz"}
    redact = Redactor(values)
    api_key, hook_secret = "tl-" + secrets.token_urlsafe(32), "whsec_" + base64.b64encode(os.urandom(32)).decode()
    for text, secret in ((f"key {api_key} refused", api_key), (f"signing with {hook_secret}", hook_secret),
                         ("postgresql://tl:hunter2hunter2@db:5432/tl", "hunter2hunter2"),
                         ("Authorization: Bearer abcdefgh12345678", "abcdefgh12345678"),
                         ("upstream said s3cr3t-value-1", "s3cr3t-value-1"),
                         ("in a URL: " + urllib.parse.quote("p@ss/w0rd+xyz", safe=""),
                          urllib.parse.quote("p@ss/w0rd+xyz", safe="")),
                         ('as JSON: "p@ss/w0rd+xyz"', "p@ss/w0rd+xyz")):
        assert secret not in redact(text), text
        assert secret.encode() not in redact.processor(None, None, text.encode())
    assert redact("GET /v1/threads 200 thread_06gzv0 bearer of news") == "GET /v1/threads 200 thread_06gzv0 bearer of news"
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "failed with %s", (api_key,), None)
    assert api_key not in RedactingFormatter("%(message)s", redact).format(record)
