"""The unmodified azure-ai-agents SDK (sync and async) against the real `threadline serve`.

Every test gets its own project, so lists hold exactly what the test made. The client reaches the
service over plain http with a Bearer key policy (wire-api §1.2).
"""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from azure.ai.agents import AgentsClient
from azure.ai.agents.aio import AgentsClient as AsyncAgentsClient
from azure.ai.agents.models import (
    FilePurpose, ListSortOrder, MessageAttachment, MessageImageFileParam, MessageImageUrlParam,
    MessageInputImageFileBlock, MessageInputImageUrlBlock, MessageInputTextBlock, MessageRole,
    ThreadMessageOptions,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.core.pipeline.policies import AzureKeyCredentialPolicy, SansIOHTTPPolicy

from tests.conftest import new_key


class RequestLog(SansIOHTTPPolicy):
    """Records the request line of everything the SDK sends."""

    def __init__(self):
        self.requests: list[tuple[str, str]] = []

    def on_request(self, request):
        self.requests.append((request.http_request.method, request.http_request.url))

    def gets(self, path_part: str) -> list[str]:
        return [url for method, url in self.requests if method == "GET" and path_part in url.split("?")[0]]


def client_kwargs(service, project: str, key: str, log: RequestLog | None = None) -> dict:
    kw = dict(endpoint=f"{service.url}/api/projects/{project}", credential=AzureKeyCredential("unused"),
              authentication_policy=AzureKeyCredentialPolicy(AzureKeyCredential(key), "Authorization",
                                                             prefix="Bearer"))
    if log is not None:
        kw["per_call_policies"] = [log]
    return kw


@pytest.fixture
async def project_key(db):
    project = f"az-{uuid.uuid4().hex[:10]}"
    return project, await new_key(db, project)


@pytest.fixture
def log():
    return RequestLog()


@pytest.fixture
def client(service, project_key, log):
    with AgentsClient(**client_kwargs(service, *project_key, log)) as c:
        yield c


# ---------------------------------------------------------------- agents

def test_agent_create_get_update_delete(client):
    agent = client.create_agent(
        model="gpt-4o", name="helper", instructions="Be brief.", description="test agent",
        temperature=0.5, top_p=0.9, metadata={"team": "sdk"},
        tools=[{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                                 "parameters": {"type": "object", "properties": {
                                                     "city": {"type": "string"}}, "required": ["city"]}}}])
    assert agent.id.startswith("asst_")
    assert (agent.name, agent.model, agent.instructions, agent.description) == \
        ("helper", "gpt-4o", "Be brief.", "test agent")
    assert agent.metadata == {"team": "sdk"}
    assert agent.temperature == 0.5 and agent.top_p == 0.9
    assert isinstance(agent.created_at, datetime) and agent.created_at.tzinfo is not None
    assert agent.tools[0].type == "function" and agent.tools[0].function.name == "get_weather"

    fetched = client.get_agent(agent.id)
    assert fetched.id == agent.id and fetched.name == "helper" and fetched.tools[0].function.name == "get_weather"

    updated = client.update_agent(agent.id, name="helper-2", metadata={"team": "sdk", "v": "2"})
    assert updated.name == "helper-2" and updated.metadata == {"team": "sdk", "v": "2"}
    assert updated.instructions == "Be brief."          # untouched fields survive an update
    assert client.get_agent(agent.id).name == "helper-2"

    assert client.delete_agent(agent.id) is None         # the SDK returns None on success
    with pytest.raises(ResourceNotFoundError):
        client.get_agent(agent.id)
    with pytest.raises(ResourceNotFoundError):
        client.delete_agent(agent.id)


def test_agent_list_pages_until_an_empty_page(client, log):
    ids = [client.create_agent(model="gpt-4o", name=f"a{i}").id for i in range(5)]

    log.requests.clear()
    listed = [a.id for a in client.list_agents(limit=2, order=ListSortOrder.ASCENDING)]
    assert listed == ids
    # pages [a0 a1] [a2 a3] [a4] and then one empty page whose null last_id ends the loop
    assert len(log.gets("/assistants")) == 4

    assert [a.id for a in client.list_agents()] == ids[::-1]          # default order is newest first
    assert [a.id for a in client.list_agents(limit=3, order="desc")] == ids[::-1]
    assert [a.id for a in client.list_agents(limit=100, order="asc", before=ids[3])] == ids[:3]

    client.delete_agent(ids[1])
    assert [a.id for a in client.list_agents(limit=1, order="asc")] == [ids[0], *ids[2:]]


# ---------------------------------------------------------------- threads

def test_thread_create_get_update_delete(client):
    thread = client.threads.create(metadata={"user": "u1"})
    assert thread.id.startswith("thread_") and thread.metadata == {"user": "u1"}
    assert isinstance(thread.created_at, datetime)

    assert client.threads.get(thread.id).metadata == {"user": "u1"}
    updated = client.threads.update(thread.id, metadata={"user": "u2", "topic": "t"})
    assert updated.id == thread.id and updated.metadata == {"user": "u2", "topic": "t"}
    assert client.threads.get(thread.id).metadata == {"user": "u2", "topic": "t"}

    assert client.threads.delete(thread.id) is None
    with pytest.raises(ResourceNotFoundError):
        client.threads.get(thread.id)
    with pytest.raises(ResourceNotFoundError):
        client.messages.list(thread.id).next()


def test_thread_with_initial_messages_and_list_pages(client, log):
    first = client.threads.create(messages=[ThreadMessageOptions(role=MessageRole.USER, content="hello"),
                                            {"role": "assistant", "content": "hi, how can I help?"}])
    texts = [m.text_messages[0].text.value for m in client.messages.list(first.id, order="asc")]
    assert texts == ["hello", "hi, how can I help?"]

    ids = [first.id] + [client.threads.create().id for _ in range(4)]
    log.requests.clear()
    assert [t.id for t in client.threads.list(limit=2, order="asc")] == ids
    assert len(log.gets("/threads")) == 4
    assert [t.id for t in client.threads.list()] == ids[::-1]


# ---------------------------------------------------------------- messages

def test_messages_create_list_get_update(client, log, tmp_path):
    thread = client.threads.create()
    image = tmp_path / "chart.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    image_file = client.files.upload_and_poll(file_path=str(image), purpose=FilePurpose.AGENTS)

    plain = client.messages.create(thread.id, role=MessageRole.USER, content="What's the weather in Paris?",
                                   metadata={"n": "1"})
    assert plain.id.startswith("msg_") and plain.thread_id == thread.id
    assert plain.role == MessageRole.USER and plain.status == "completed"
    assert plain.text_messages[0].text.value == "What's the weather in Paris?"
    assert plain.metadata == {"n": "1"} and plain.run_id is None

    blocks = client.messages.create(thread.id, role="user", content=[
        MessageInputTextBlock(text="Describe these pictures."),
        MessageInputImageUrlBlock(image_url=MessageImageUrlParam(url="https://example.com/a.png", detail="high")),
        MessageInputImageFileBlock(image_file=MessageImageFileParam(file_id=image_file.id, detail="low")),
    ], attachments=[MessageAttachment(file_id=image_file.id, tools=[])])
    assert [c.type for c in blocks.content] == ["text", "image_url", "image_file"]
    assert blocks.content[0].text.value == "Describe these pictures."
    # Azure has no output class for image_url parts; the raw mapping is still there
    assert blocks.content[1]["image_url"] == {"url": "https://example.com/a.png", "detail": "high"}
    assert blocks.image_contents[0].image_file.file_id == image_file.id
    assert blocks.attachments[0].file_id == image_file.id
    assert blocks.attachments[0].tools == []

    answer = client.messages.create(thread.id, role=MessageRole.AGENT, content="It is sunny.")
    more = [client.messages.create(thread.id, role="user", content=f"follow-up {i}").id for i in range(2)]
    ids = [plain.id, blocks.id, answer.id, *more]

    log.requests.clear()
    assert [m.id for m in client.messages.list(thread.id, limit=2, order=ListSortOrder.ASCENDING)] == ids
    assert len(log.gets("/messages")) == 4
    assert [m.id for m in client.messages.list(thread.id)] == ids[::-1]
    assert list(client.messages.list(thread.id, run_id="run_none")) == []   # user messages belong to no run

    got = client.messages.get(thread.id, blocks.id)
    assert got.id == blocks.id and [c.type for c in got.content] == ["text", "image_url", "image_file"]

    updated = client.messages.update(thread.id, plain.id, metadata={"n": "1", "seen": "yes"})
    assert updated.metadata == {"n": "1", "seen": "yes"}
    assert client.messages.get(thread.id, plain.id).metadata == {"n": "1", "seen": "yes"}

    last_agent = client.messages.get_last_message_by_role(thread.id, MessageRole.AGENT)
    assert last_agent.id == answer.id
    assert client.messages.get_last_message_text_by_role(thread.id, MessageRole.USER).text.value == "follow-up 1"
    assert client.messages.get_last_message_by_role(client.threads.create().id, MessageRole.AGENT) is None

    with pytest.raises(ResourceNotFoundError):
        client.messages.get(thread.id, "msg_doesnotexist")
    with pytest.raises(ResourceNotFoundError):
        client.messages.create("thread_doesnotexist", role="user", content="hi")


# ---------------------------------------------------------------- files

def test_files_upload_list_download_delete(client, tmp_path):
    source = tmp_path / "notes.txt"
    source.write_bytes(b"hello from a file\n" * 1000)
    from_path = client.files.upload_and_poll(file_path=str(source), purpose=FilePurpose.AGENTS)
    assert from_path.filename == "notes.txt" and from_path.bytes == source.stat().st_size
    assert from_path.status == "processed" and from_path.purpose == "assistants"

    payload = bytes(range(256)) * 20
    from_bytes = client.files.upload_and_poll(file=payload, filename="blob.bin", purpose="assistants")
    assert from_bytes.filename == "blob.bin" and from_bytes.bytes == len(payload)
    vision = client.files.upload(file=b"img", filename="pic.png", purpose=FilePurpose.VISION)
    as_tuple = client.files.upload(file=("tuple.txt", b"named by a tuple"), purpose="assistants")
    assert (vision.filename, as_tuple.filename) == ("pic.png", "tuple.txt")

    assert {f.id for f in client.files.list().data} == {from_path.id, from_bytes.id, vision.id, as_tuple.id}
    assert [f.id for f in client.files.list(purpose=FilePurpose.VISION).data] == [vision.id]
    got = client.files.get(from_bytes.id)
    assert (got.id, got.filename, got.bytes) == (from_bytes.id, "blob.bin", len(payload))

    assert b"".join(client.files.get_content(from_bytes.id)) == payload
    client.files.save(from_path.id, "copy.txt", target_dir=tmp_path / "out")
    assert (tmp_path / "out" / "copy.txt").read_bytes() == source.read_bytes()

    assert client.files.delete(from_bytes.id) is None    # azure-ai-agents 1.1.0 returns None
    with pytest.raises(ResourceNotFoundError):
        client.files.get(from_bytes.id)
    with pytest.raises(ResourceNotFoundError):
        b"".join(client.files.get_content(from_bytes.id))
    assert {f.id for f in client.files.list().data} == {from_path.id, vision.id, as_tuple.id}


# ---------------------------------------------------------------- errors

def test_unknown_ids_raise_resource_not_found(client):
    for call in (lambda: client.get_agent("asst_nope"), lambda: client.update_agent("asst_nope", name="x"),
                 lambda: client.threads.get("thread_nope"), lambda: client.threads.delete("thread_nope"),
                 lambda: client.threads.update("thread_nope", metadata={"a": "b"}),
                 lambda: client.files.get("file-nope"), lambda: client.files.delete("file-nope")):
        with pytest.raises(ResourceNotFoundError) as info:
            call()
        assert "nope" in str(info.value)


def test_validation_error_raises_http_response_error_with_the_message(client):
    with pytest.raises(HttpResponseError) as info:
        client.create_agent(model="gpt-4o", metadata={f"k{i}": "v" for i in range(17)})
    assert info.value.status_code == 400
    assert info.value.error.message and "metadata" in info.value.error.message


def test_endpoint_without_project_path_or_with_trailing_slash(service, project_key):
    project, key = project_key
    for endpoint in (f"{service.url}/api/projects/{project}/", service.url, f"{service.url}/"):
        kw = client_kwargs(service, project, key)
        with AgentsClient(**{**kw, "endpoint": endpoint}) as c:
            thread = c.threads.create(metadata={"endpoint": endpoint})
            assert c.threads.get(thread.id).metadata == {"endpoint": endpoint}


def test_bad_key_raises_client_authentication_error(service, project_key):
    project, _ = project_key
    with AgentsClient(**client_kwargs(service, project, "tl-not-a-real-key")) as bad:
        with pytest.raises(ClientAuthenticationError):
            bad.create_agent(model="gpt-4o")
        with pytest.raises(ClientAuthenticationError):
            list(bad.list_agents())
        with pytest.raises(ClientAuthenticationError):
            bad.files.list()


@pytest.fixture
async def other_project_key(db):
    project = f"az-{uuid.uuid4().hex[:10]}"
    return project, await new_key(db, project)


def test_other_projects_objects_are_invisible(service, client, project_key, other_project_key):
    agent = client.create_agent(model="gpt-4o")
    with AgentsClient(**client_kwargs(service, *other_project_key)) as other:
        with pytest.raises(ResourceNotFoundError):
            other.get_agent(agent.id)
        assert list(other.list_agents()) == []
    # a key used under another project's endpoint is refused, not silently rerouted
    with AgentsClient(**client_kwargs(service, other_project_key[0], project_key[1])) as crossed:
        with pytest.raises(ResourceNotFoundError):
            crossed.get_agent(agent.id)


async def test_async_client_end_to_end(service, project_key, tmp_path):
    log = RequestLog()
    async with AsyncAgentsClient(**client_kwargs(service, *project_key, log)) as client:
        agent_ids = [(await client.create_agent(model="gpt-4o", name=f"async-{i}")).id for i in range(3)]
        log.requests.clear()
        assert [a.id async for a in client.list_agents(limit=2, order="asc")] == agent_ids
        assert len(log.gets("/assistants")) == 3
        updated = await client.update_agent(agent_ids[0], instructions="new", metadata={"k": "v"})
        assert updated.instructions == "new" and updated.metadata == {"k": "v"}
        assert (await client.get_agent(agent_ids[0])).instructions == "new"

        thread = await client.threads.create(metadata={"mode": "async"})
        assert (await client.threads.update(thread.id, metadata={"mode": "aio"})).metadata == {"mode": "aio"}
        assert [t.id async for t in client.threads.list(limit=1)] == [thread.id]

        sent = [await client.messages.create(thread.id, role="user", content=f"m{i}") for i in range(3)]
        sent.append(await client.messages.create(thread.id, role="user", content=[
            MessageInputTextBlock(text="with blocks"),
            MessageInputImageUrlBlock(image_url=MessageImageUrlParam(url="https://example.com/b.png"))]))
        assert [m.id async for m in client.messages.list(thread.id, limit=2, order="asc")] == [m.id for m in sent]
        got = await client.messages.get(thread.id, sent[3].id)
        assert got.content[0].text.value == "with blocks" and got.content[1]["image_url"]["url"] == "https://example.com/b.png"
        assert (await client.messages.update(thread.id, sent[0].id, metadata={"x": "y"})).metadata == {"x": "y"}
        assert (await client.messages.get_last_message_text_by_role(thread.id, MessageRole.USER)).text.value \
            == "with blocks"

        source = tmp_path / "async.txt"
        source.write_text("async file body")
        uploaded = await client.files.upload_and_poll(file_path=str(source), purpose="assistants")
        from_bytes = await client.files.upload_and_poll(file=b"raw bytes", filename="raw.txt", purpose="assistants")
        assert {f.id for f in (await client.files.list()).data} == {uploaded.id, from_bytes.id}
        assert (await client.files.get(uploaded.id)).filename == "async.txt"
        assert b"".join([c async for c in await client.files.get_content(uploaded.id)]) == b"async file body"
        await client.files.save(from_bytes.id, "raw-copy.txt", target_dir=tmp_path)
        assert (tmp_path / "raw-copy.txt").read_bytes() == b"raw bytes"
        assert await client.files.delete(uploaded.id) is None

        with pytest.raises(ResourceNotFoundError):
            await client.files.get(uploaded.id)
        with pytest.raises(ResourceNotFoundError):
            await client.messages.get(thread.id, "msg_nope")
        await client.threads.delete(thread.id)
        with pytest.raises(ResourceNotFoundError):
            await client.threads.get(thread.id)
        for agent_id in agent_ids:
            await client.delete_agent(agent_id)
        assert [a async for a in client.list_agents()] == []

    async with AsyncAgentsClient(**client_kwargs(service, project_key[0], "tl-wrong")) as bad:
        with pytest.raises(ClientAuthenticationError):
            await bad.threads.create()
