"""A model provider that misbehaves, at the level of a run: it hangs (before answering, mid-stream,
or sending only keep-alives), resets connections (before answering, mid-stream), sends garbage
chunks or an HTML page, or never stops. Each run ends with a clear `last_error` within its
timeouts while the service stays healthy and other runs go on. All at once, against one real
local server (tests/fake_openai.py); 500/429/400 are in tests/test_run_engine.py, the provider
alone in tests/test_models.py."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, until
from conftest import test_config as make_config
from fake_openai import FakeOpenAI, Reply, chunk, text_events, text_reply
from service.app import create_app
from test_runs_api import TERMINAL, wait_run

READ_TIMEOUT, ATTEMPTS = 1.5, 2
# A failure before any text is retried; each try waits at most the read timeout (connect is instant
# on loopback), plus backoff and scheduling slack on a busy 2-core machine.
WITHIN = ATTEMPTS * READ_TIMEOUT + 3.0

FAULTS = {
    # model name: (the provider's behaviour, words the run's last_error.message must contain)
    "hangs-before-answering": (Reply(delay=60), "did not answer in time"),
    "hangs-mid-stream": (Reply(events=text_events("Partly ", "there"), then="hang"), "did not answer in time"),
    "only-keep-alives": (Reply(events=[], then="trickle", chunk_delay=0.1), "did not answer in time"),
    "resets-before-answering": (Reply(reset_before_response=True), "connection"),
    "resets-mid-stream": (Reply(events=text_events("Partly ", "there"), then="reset"), "connection"),
    "garbage-chunk": (Reply(events=[*text_events("Partly"), "{not json at all"]), "cannot be read"),
    "wrong-shape-chunk": (Reply(events=[{"unexpected": [1, 2, 3]}]), "cannot be read"),
    "html-page": (Reply(raw=b"<html><body><h1>502 Bad Gateway</h1></body></html>"), "ended before it finished"),
}


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


async def service(fake, database_url, project, tmp_path, monkeypatch, **config) -> TestClient:
    table = fake.models_file_content(*FAULTS, "healthy", api_key_env="FAKE_KEY", read_timeout=READ_TIMEOUT,
                                     connect_timeout=READ_TIMEOUT, max_attempts=ATTEMPTS, retry_base_delay=0.01)
    (tmp_path / "models.json").write_text(json.dumps(table))
    monkeypatch.setenv("FAKE_KEY", "sk-fake")
    config = {"models_file": str(tmp_path / "models.json"), **config}
    http = TestClient(TestServer(create_app(make_config(**config), database_url)))
    await http.start_server()
    return http


async def start_run(api: Client, model: str) -> tuple[str, str]:
    assistant = await api.ok("POST", "/assistants", {"model": model})
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hello"}]})
    run = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"]})
    return thread["id"], run["id"]


async def test_misbehaving_providers_fail_their_runs_clearly_and_nothing_else(fake, database_url, project,
                                                                              tmp_path, monkeypatch):
    for model, (reply, _) in FAULTS.items():
        fake.script_for(model, reply)
    fake.script_for("healthy", text_reply("Fine ", "thanks."))
    http = await service(fake, database_url, project, tmp_path, monkeypatch)
    api = Client(http, project[1])
    try:
        started = time.monotonic()
        runs = dict(zip(FAULTS, await asyncio.gather(*(start_run(api, m) for m in FAULTS))))

        # While every faulty call is pending or being retried: healthy, and other runs work.
        (await api.http.get("/healthz")).raise_for_status()
        thread_id, run_id = await start_run(api, "healthy")
        healthy = await wait_run(api, thread_id, run_id, timeout=WITHIN)
        assert healthy["status"] == "completed", healthy
        pending = [m for m, (t, r) in runs.items()
                   if (await api.ok("GET", f"/threads/{t}/runs/{r}"))["status"] not in TERMINAL]
        assert {"hangs-before-answering", "hangs-mid-stream", "only-keep-alives"} <= set(pending), \
            "the healthy run had to wait for the hanging ones"

        for model, (thread_id, run_id) in runs.items():
            run = await wait_run(api, thread_id, run_id, timeout=WITHIN - (time.monotonic() - started) + 1)
            assert run["status"] == "failed", (model, run)
            assert run["last_error"]["code"] == "server_error", (model, run["last_error"])
            assert FAULTS[model][1] in run["last_error"]["message"].lower(), (model, run["last_error"])
            messages = (await api.ok("GET", f"/threads/{thread_id}/messages"))["data"]
            for reply in [m for m in messages if m["role"] == "assistant"]:
                # Text that did arrive is kept, and marked as cut short.
                assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "run_failed"}
            # The thread is free again.
            await api.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "still there?"})

        (await api.http.get("/healthz")).raise_for_status()
        thread_id, run_id = await start_run(api, "healthy")
        assert (await wait_run(api, thread_id, run_id))["status"] == "completed"
    finally:
        await http.close()


async def endless_run(fake, database_url, project, tmp_path, monkeypatch) -> tuple[TestClient, str, dict]:
    """A run on a model whose chunks keep coming, so no read timeout fires: only the run's own
    deadline (expires_at, 2 s here) can end it. (client, thread id, the ended run)"""
    fake.script_for("healthy", Reply(events=[*text_events("on "), chunk({"content": "and on "})],
                                     then="endless", chunk_delay=0.05))
    http = await service(fake, database_url, project, tmp_path, monkeypatch, run_expiry_seconds=2,
                         run_sweep_seconds=0.1)
    api = Client(http, project[1])
    thread_id, run_id = await start_run(api, "healthy")
    return http, thread_id, await wait_run(api, thread_id, run_id, timeout=6)


async def test_a_provider_that_never_stops_is_cut_off_when_the_run_expires(fake, database_url, project,
                                                                          tmp_path, monkeypatch):
    http, thread_id, run = await endless_run(fake, database_url, project, tmp_path, monkeypatch)
    api = Client(http, project[1])
    try:
        assert run["status"] == "expired", run
        (reply,) = [m for m in (await api.ok("GET", f"/threads/{thread_id}/messages"))["data"]
                    if m["role"] == "assistant"]
        assert reply["status"] == "incomplete" and reply["incomplete_details"] == {"reason": "run_expired"}
        # The reply keeps the text it streamed before the run expired.
        assert reply["content"] and reply["content"][0]["text"]["value"].startswith("on and on")
        # The call is abandoned, not left streaming into nowhere.
        await until(lambda: not fake.open_streams, "the endless model call to be abandoned", timeout=5)
        (await api.http.get("/healthz")).raise_for_status()
        await api.ok("POST", f"/threads/{thread_id}/messages", {"role": "user", "content": "enough"})
    finally:
        await http.close()
