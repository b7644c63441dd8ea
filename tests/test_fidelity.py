"""Drop-in fidelity: what a client sends is honoured or refused, never ignored (reasoning_effort,
tool types the server does not run), and SDK pollers are answered at the pace of the run."""

from __future__ import annotations

import json

import openai
import pytest
from aiohttp.test_utils import TestClient, TestServer

from conftest import Client, new_key
from conftest import test_config as make_config
from fake_openai import FakeOpenAI, text_reply
from service.app import create_app
from test_runs_api import wait_run

EFFORTS = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]


# --- reasoning_effort ----------------------------------------------------------------------------

async def test_reasoning_effort_null_and_every_sdk_value_is_accepted_and_echoed(client):
    # One popular framework sends `reasoning_effort: null` on every assistant it creates.
    a = await client.ok("POST", "/assistants", {"model": "m", "reasoning_effort": None})
    assert a["reasoning_effort"] is None
    for effort in EFFORTS:
        made = await client.ok("POST", "/assistants", {"model": "m", "reasoning_effort": effort})
        assert made["reasoning_effort"] == effort
        assert (await client.ok("GET", f"/assistants/{made['id']}"))["reasoning_effort"] == effort
    updated = await client.ok("POST", f"/assistants/{a['id']}", {"reasoning_effort": "high"})
    assert updated["reasoning_effort"] == "high"
    cleared = await client.ok("POST", f"/assistants/{a['id']}", {"reasoning_effort": None})
    assert cleared["reasoning_effort"] is None
    status, err = await client.call("POST", "/assistants", {"model": "m", "reasoning_effort": "extreme"})
    assert status == 400 and err["error"]["param"] == "reasoning_effort"


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def api(fake, database_url, project, tmp_path):
    """The service with three models on the fake provider: a chat model, a reasoning model known by
    its name, and an o-named model the table says does not reason."""
    base = fake.models_file_content("gpt-4o", max_attempts=1)["models"]["gpt-4o"]
    table = {"models": {"gpt-4o": base, "o3-mini": base, "o3-lookalike": {**base, "model": "o3", "reasoning": False}}}
    (tmp_path / "models.json").write_text(json.dumps(table))
    app = create_app(make_config(models_file=str(tmp_path / "models.json")), database_url)
    http = TestClient(TestServer(app))
    await http.start_server()
    yield Client(http, project[1])
    await http.close()


async def _run(api: Client, assistant: dict, **run) -> dict:
    thread = await api.ok("POST", "/threads", {"messages": [{"role": "user", "content": "think"}]})
    created = await api.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": assistant["id"], **run})
    return await wait_run(api, thread["id"], created["id"])


async def test_reasoning_effort_reaches_the_model_and_reasoning_models_get_max_completion_tokens(api, fake):
    fake.script(text_reply("ok"))
    reasoner = await api.ok("POST", "/assistants", {"model": "o3-mini", "reasoning_effort": "low"})
    run = await _run(api, reasoner, max_completion_tokens=500)
    assert run["status"] == "completed" and run["reasoning_effort"] == "low"
    body = fake.requests[-1].body
    assert body["reasoning_effort"] == "low"
    assert body["max_completion_tokens"] == 500 and "max_tokens" not in body

    overridden = await _run(api, reasoner, reasoning_effort="xhigh")
    assert overridden["reasoning_effort"] == "xhigh" and fake.requests[-1].body["reasoning_effort"] == "xhigh"

    chat = await api.ok("POST", "/assistants", {"model": "gpt-4o"})
    plain = await _run(api, chat, max_completion_tokens=300)
    assert plain["reasoning_effort"] is None
    body = fake.requests[-1].body
    assert "reasoning_effort" not in body and body["max_tokens"] == 300 and "max_completion_tokens" not in body

    table_says_no = await api.ok("POST", "/assistants", {"model": "o3-lookalike"})
    await _run(api, table_says_no, max_completion_tokens=256)
    body = fake.requests[-1].body
    assert body["model"] == "o3" and body["max_tokens"] == 256 and "max_completion_tokens" not in body


# --- tool types the server does not run ----------------------------------------------------------

HOSTED = ["file_search", "code_interpreter", "bing_grounding", "openapi", "azure_function", "connected_agent",
          "mcp", "azure_ai_search", "retrieval"]
FUNCTION = {"type": "function", "function": {"name": "lookup"}}


def assert_refused(status: int, body: dict, kind: str, param: str) -> None:
    assert status == 400, body
    error = body["error"]
    assert error["param"] == param and error["code"] == "invalid_value" and error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"Invalid value: '{kind}'. Supported values are: 'function'.")


@pytest.mark.parametrize("kind", HOSTED)
async def test_a_tool_the_server_does_not_run_is_refused_on_assistants_and_runs(client, kind):
    status, body = await client.call("POST", "/assistants", {"model": "m", "tools": [FUNCTION, {"type": kind}]})
    assert_refused(status, body, kind, "tools[1].type")
    assert (await client.ok("GET", "/assistants"))["data"] == []      # nothing was stored

    a = await client.ok("POST", "/assistants", {"model": "builtin/echo", "tools": [FUNCTION]})
    status, body = await client.call("POST", f"/assistants/{a['id']}", {"tools": [{"type": kind}]})
    assert_refused(status, body, kind, "tools[0].type")
    assert (await client.ok("GET", f"/assistants/{a['id']}"))["tools"] == [FUNCTION]

    thread = await client.ok("POST", "/threads")
    status, body = await client.call("POST", f"/threads/{thread['id']}/runs",
                                     {"assistant_id": a["id"], "tools": [FUNCTION, {"type": kind}]})
    assert_refused(status, body, kind, "tools[1].type")
    status, body = await client.call("POST", "/threads/runs", {"assistant_id": a["id"], "tools": [{"type": kind}]})
    assert_refused(status, body, kind, "tools[0].type")
    assert (await client.ok("GET", f"/threads/{thread['id']}/runs"))["data"] == []


async def test_tool_resources_and_attachments_of_tools_the_server_does_not_run_are_refused(client):
    resources = {"file_search": {"vector_store_ids": ["vs_1"]}}
    status, body = await client.call("POST", "/assistants", {"model": "m", "tool_resources": resources})
    assert_refused(status, body, "file_search", "tool_resources.file_search")
    status, body = await client.call("POST", "/threads", {"tool_resources": {"code_interpreter": {"file_ids": []}}})
    assert_refused(status, body, "code_interpreter", "tool_resources.code_interpreter")
    thread = await client.ok("POST", "/threads")
    status, body = await client.call("POST", f"/threads/{thread['id']}", {"tool_resources": resources})
    assert_refused(status, body, "file_search", "tool_resources.file_search")

    file_id = (await client.upload(b"notes"))["id"]
    attached = {"role": "user", "content": "read this", "attachments": [
        {"file_id": file_id, "tools": [{"type": "file_search"}]}]}
    status, body = await client.call("POST", f"/threads/{thread['id']}/messages", attached)
    assert_refused(status, body, "file_search", "attachments[0].tools[0].type")
    status, body = await client.call("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}, attached]})
    assert_refused(status, body, "file_search", "messages[1].attachments[0].tools[0].type")
    a = await client.ok("POST", "/assistants", {"model": "builtin/echo"})
    status, body = await client.call("POST", f"/threads/{thread['id']}/runs",
                                     {"assistant_id": a["id"], "additional_messages": [attached]})
    assert_refused(status, body, "file_search", "additional_messages[0].attachments[0].tools[0].type")
    status, body = await client.call("POST", "/threads/runs", {"assistant_id": a["id"], "thread": {
        "tool_resources": resources}})
    assert_refused(status, body, "file_search", "thread.tool_resources.file_search")
    assert (await client.ok("GET", f"/threads/{thread['id']}/messages"))["data"] == []
    assert [t["id"] for t in (await client.ok("GET", "/threads"))["data"]] == [thread["id"]]

    # An attachment that names no tool is a plain reference to a file, and a function tool has no resources.
    plain = await client.ok("POST", f"/threads/{thread['id']}/messages",
                            {"role": "user", "content": "x", "attachments": [{"file_id": file_id, "tools": []}]})
    assert plain["attachments"] == [{"file_id": file_id, "tools": []}]


async def test_an_assistant_stored_with_a_tool_the_server_does_not_run_cannot_run(client, lenient_client):
    """Stored under the lenient setting (or before the server refused such tools), then run on a strict server:
    the run is refused rather than run as if the tool were not there."""
    a = await lenient_client.ok("POST", "/assistants", {"model": "builtin/echo", "tools": [FUNCTION, {"type": "file_search"}]})
    assert a["tools"] == [FUNCTION, {"type": "file_search"}]
    thread = await client.ok("POST", "/threads")
    status, body = await client.call("POST", f"/threads/{thread['id']}/runs", {"assistant_id": a["id"]})
    assert_refused(status, body, "file_search", "tools[1].type")
    # the run's own tools replace the assistant's: with those it runs
    run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": a["id"], "tools": [FUNCTION]})
    assert (await wait_run(client, thread["id"], run["id"]))["status"] == "completed"


def test_both_sdks_see_the_refusal_with_its_param(service, db_key):
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key=db_key, max_retries=0) as oa:
        with pytest.raises(openai.BadRequestError) as refused:
            oa.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
        assert refused.value.code == "invalid_value" and refused.value.param == "tools[0].type"
        assert "'code_interpreter'" in refused.value.message

    from azure.ai.agents import AgentsClient
    from azure.ai.agents.models import FileSearchTool
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.policies import AzureKeyCredentialPolicy
    with AgentsClient(endpoint=service.url, credential=AzureKeyCredential(db_key), authentication_policy=
                      AzureKeyCredentialPolicy(AzureKeyCredential(db_key), "Authorization", prefix="Bearer")) as az:
        tool = FileSearchTool(vector_store_ids=["vs_1"])
        with pytest.raises(HttpResponseError) as refused:
            az.create_agent(model="gpt-4o", name="a", tools=tool.definitions, tool_resources=tool.resources)
        assert refused.value.status_code == 400 and "(invalid_value) Invalid value: 'file_search'" in str(refused.value)


@pytest.fixture
async def db_key(db):
    return await new_key(db)


# --- polling pace --------------------------------------------------------------------------------

async def test_runs_and_steps_tell_pollers_when_to_ask_again(client):
    a = await client.ok("POST", "/assistants", {"model": "builtin/echo"})
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    status, body, headers = await client.raw("POST", f"/threads/{thread['id']}/runs", json={"assistant_id": a["id"]})
    run = json.loads(body)
    assert status == 200 and run["status"] == "queued" and headers["openai-poll-after-ms"] == "25"
    done = await wait_run(client, thread["id"], run["id"])
    _, _, headers = await client.raw("GET", f"/threads/{thread['id']}/runs/{run['id']}")
    assert done["status"] == "completed" and headers["openai-poll-after-ms"] == "1000"
    _, _, headers = await client.raw("GET", f"/threads/{thread['id']}/runs/{run['id']}/steps")
    assert headers["openai-poll-after-ms"] == "1000"


async def test_an_sdk_poll_of_an_active_run_is_answered_when_the_run_ends(client, tmp_path):
    script = tmp_path / "slow.json"
    script.write_text(json.dumps({"turns": [{"text": "done", "delay": 0.6}]}))
    a = await client.ok("POST", "/assistants", {"model": f"builtin/script:{script}"})
    thread = await client.ok("POST", "/threads", {"messages": [{"role": "user", "content": "hi"}]})
    run = await client.ok("POST", f"/threads/{thread['id']}/runs", {"assistant_id": a["id"]})
    status, body, _ = await client.raw("GET", f"/threads/{thread['id']}/runs/{run['id']}",
                                       headers={"X-Stainless-Poll-Helper": "true"})
    # One poll, answered as the run ended (not at once with "queued", not after a fixed sleep).
    assert status == 200 and json.loads(body)["status"] == "completed"
    # Without the poller's header a GET answers at once, as always.
    other = await client.ok("POST", f"/threads/{(await client.ok('POST', '/threads'))['id']}/runs",
                            {"assistant_id": a["id"]})
    got = await client.ok("GET", f"/threads/{other['thread_id']}/runs/{other['id']}")
    assert got["status"] in ("queued", "in_progress")
    await wait_run(client, other["thread_id"], other["id"])


def test_create_and_poll_ends_with_the_run_in_one_poll(service, db_key):
    """The openai SDK's create_and_poll sleeps 1 s between polls unless told otherwise, so a 15 ms run
    took 1-2 s for every SDK user. Its one poll is now answered when the run ends."""
    gets = []
    http = openai.DefaultHttpxClient(event_hooks={"request": [lambda r: r.method == "GET" and gets.append(r)]})
    with openai.OpenAI(base_url=f"{service.url}/v1", api_key=db_key, max_retries=0, http_client=http) as oa:
        assistant = oa.beta.assistants.create(model="builtin/echo")
        thread = oa.beta.threads.create(messages=[{"role": "user", "content": "quick"}])
        run = oa.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"
    assert len(gets) == 1 and gets[0].headers["x-stainless-poll-helper"] == "true"


# --- cursors -------------------------------------------------------------------------------------

async def test_a_cursor_naming_another_tenants_object_pages_like_an_unknown_id(client, db, app_client):
    """A cursor is a position in the id order, never looked up: naming an object of another thread or
    another project gives exactly the page an unknown id at that position gives (nothing to learn)."""
    other = Client(app_client, await new_key(db))
    mine = (await client.ok("POST", "/threads"))["id"]
    sibling = (await client.ok("POST", "/threads"))["id"]
    foreign_thread = (await other.ok("POST", "/threads"))["id"]
    ids = []
    for i in range(6):
        ids.append((await client.ok("POST", f"/threads/{mine}/messages", {"role": "user", "content": f"m{i}"}))["id"])
        if i in (1, 3):
            ids.append((await client.ok("POST", f"/threads/{sibling}/messages", {"role": "user", "content": "s"}))["id"])
            ids.append((await other.ok("POST", f"/threads/{foreign_thread}/messages",
                                       {"role": "user", "content": "o"}))["id"])
    strangers = [i for i in ids if i not in
                 {m["id"] for m in (await client.ok("GET", f"/threads/{mine}/messages", params={"limit": "100"}))["data"]}]
    assert len(strangers) == 4
    for cursor in strangers:
        # No object has this id, and none sorts between it and the cursor (ids have one length, so
        # the cursor followed by anything sits right after the cursor; a changed last character
        # could skip over the next id made in the same millisecond).
        unknown = cursor + "0"
        for params in ({"after": cursor}, {"before": cursor}, {"after": cursor, "order": "asc"},
                       {"before": cursor, "order": "asc", "limit": "2"}):
            seen = await client.ok("GET", f"/threads/{mine}/messages", params=params)
            same = await client.ok("GET", f"/threads/{mine}/messages", params={**params, **{
                k: unknown for k in ("after", "before") if k in params}})
            assert seen == same, (params, seen, same)
            assert all(m["thread_id"] == mine for m in seen["data"])
