"""The unmodified openai SDK (OpenAI, AsyncOpenAI, AzureOpenAI) against the real `threadline serve`.

Every test gets its own project, so lists hold exactly what the test made.
"""

from __future__ import annotations

import uuid

import openai
import pytest
from openai import AsyncOpenAI, AuthenticationError, AzureOpenAI, NotFoundError, OpenAI

from tests.conftest import new_key


class RequestLog:
    """An httpx event hook that records the request line of everything the SDK sends."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict]] = []

    def __call__(self, request):
        self.requests.append((request.method, str(request.url), dict(request.headers)))

    async def async_hook(self, request):
        self(request)

    def gets(self, path_part: str) -> list[str]:
        return [url for method, url, _ in self.requests if method == "GET" and path_part in url.split("?")[0]]


@pytest.fixture
async def key(db):
    return await new_key(db, f"oa-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def log():
    return RequestLog()


@pytest.fixture
def client(service, key, log):
    http = openai.DefaultHttpxClient(event_hooks={"request": [log]})
    with OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0, http_client=http) as c:
        yield c


# ---------------------------------------------------------------- assistants

def test_assistant_create_retrieve_update_delete(client):
    assistant = client.beta.assistants.create(
        model="gpt-4o", name="helper", instructions="Be brief.", description="test assistant",
        temperature=0.3, top_p=0.8, metadata={"team": "sdk"}, response_format={"type": "json_object"},
        tools=[{"type": "function", "function": {"name": "fetch"}},
               {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object",
                                                                                   "properties": {}}}}])
    assert assistant.id.startswith("asst_") and assistant.object == "assistant"
    assert (assistant.name, assistant.model, assistant.instructions, assistant.description) == \
        ("helper", "gpt-4o", "Be brief.", "test assistant")
    assert assistant.metadata == {"team": "sdk"} and assistant.temperature == 0.3 and assistant.top_p == 0.8
    assert assistant.response_format.type == "json_object"
    assert [t.type for t in assistant.tools] == ["function", "function"]
    assert assistant.tools[1].function.name == "lookup"
    assert isinstance(assistant.created_at, int)

    assert client.beta.assistants.retrieve(assistant.id).model_dump() == assistant.model_dump()

    updated = client.beta.assistants.update(assistant.id, name="helper-2", metadata={"team": "sdk", "v": "2"},
                                            tools=[])
    assert updated.name == "helper-2" and updated.metadata == {"team": "sdk", "v": "2"} and updated.tools == []
    assert updated.instructions == "Be brief."
    assert client.beta.assistants.retrieve(assistant.id).name == "helper-2"

    deleted = client.beta.assistants.delete(assistant.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (assistant.id, "assistant.deleted", True)
    with pytest.raises(NotFoundError) as info:
        client.beta.assistants.retrieve(assistant.id)
    assert info.value.status_code == 404 and assistant.id in info.value.message


def test_assistant_list_auto_paginates(client, log):
    ids = [client.beta.assistants.create(model="gpt-4o", name=f"a{i}").id for i in range(5)]

    log.requests.clear()
    assert [a.id for a in client.beta.assistants.list(limit=2, order="asc")] == ids
    assert len(log.gets("/assistants")) == 3          # openai stops on has_more=false: [a0 a1] [a2 a3] [a4]

    page = client.beta.assistants.list(limit=2)       # newest first by default
    assert [a.id for a in page.data] == ids[:-3:-1] and page.has_more is True
    assert page.first_id == ids[4] and page.last_id == ids[3]
    assert [a.id for a in page.get_next_page().data] == [ids[2], ids[1]]
    assert [a.id for a in client.beta.assistants.list(limit=100, before=ids[1])] == ids[:1:-1]


# ---------------------------------------------------------------- threads

def test_thread_create_retrieve_update_delete(client):
    thread = client.beta.threads.create(
        metadata={"user": "u1"}, messages=[{"role": "user", "content": "hello"},
                                           {"role": "assistant", "content": "hi there"}])
    assert thread.id.startswith("thread_") and thread.object == "thread" and thread.metadata == {"user": "u1"}
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(thread.id, order="asc")]
    assert texts == ["hello", "hi there"]

    assert client.beta.threads.retrieve(thread.id).metadata == {"user": "u1"}
    assert client.beta.threads.update(thread.id, metadata={"user": "u2"}).metadata == {"user": "u2"}
    assert client.beta.threads.retrieve(thread.id).metadata == {"user": "u2"}

    deleted = client.beta.threads.delete(thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (thread.id, "thread.deleted", True)
    with pytest.raises(NotFoundError):
        client.beta.threads.retrieve(thread.id)
    with pytest.raises(NotFoundError):
        client.beta.threads.messages.create(thread.id, role="user", content="too late")


# ---------------------------------------------------------------- messages

def test_messages_create_list_retrieve_update_delete(client, log):
    thread = client.beta.threads.create()
    image = client.files.create(file=("photo.png", b"\x89PNG fake image"), purpose="vision")

    plain = client.beta.threads.messages.create(thread.id, role="user", content="What's in this image?",
                                                metadata={"n": "1"})
    assert plain.id.startswith("msg_") and plain.object == "thread.message" and plain.thread_id == thread.id
    assert plain.role == "user" and plain.status == "completed" and plain.assistant_id is None
    assert plain.content[0].type == "text" and plain.content[0].text.value == "What's in this image?"
    assert plain.content[0].text.annotations == [] and plain.attachments == []

    blocks = client.beta.threads.messages.create(thread.id, role="user", content=[
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
        {"type": "image_file", "image_file": {"file_id": image.id}},
    ], attachments=[{"file_id": image.id, "tools": []}])
    assert [c.type for c in blocks.content] == ["text", "image_url", "image_file"]
    assert blocks.content[1].image_url.url == "https://example.com/cat.png"
    assert blocks.content[1].image_url.detail == "high"
    assert blocks.content[2].image_file.file_id == image.id
    assert blocks.attachments[0].file_id == image.id and blocks.attachments[0].tools == []

    rest = [client.beta.threads.messages.create(thread.id, role="assistant" if i == 0 else "user",
                                                content=f"m{i}").id for i in range(3)]
    ids = [plain.id, blocks.id, *rest]

    log.requests.clear()
    assert [m.id for m in client.beta.threads.messages.list(thread.id, limit=2, order="asc")] == ids
    assert len(log.gets("/messages")) == 3
    assert [m.id for m in client.beta.threads.messages.list(thread.id)] == ids[::-1]
    assert [m.id for m in client.beta.threads.messages.list(thread.id, after=ids[2], order="asc")] == ids[3:]
    assert client.beta.threads.messages.list(thread.id, run_id="run_none").data == []

    got = client.beta.threads.messages.retrieve(blocks.id, thread_id=thread.id)
    assert got.model_dump() == blocks.model_dump()

    updated = client.beta.threads.messages.update(plain.id, thread_id=thread.id, metadata={"n": "2"})
    assert updated.metadata == {"n": "2"}
    assert client.beta.threads.messages.retrieve(plain.id, thread_id=thread.id).metadata == {"n": "2"}

    deleted = client.beta.threads.messages.delete(rest[1], thread_id=thread.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (rest[1], "thread.message.deleted", True)
    with pytest.raises(NotFoundError):
        client.beta.threads.messages.retrieve(rest[1], thread_id=thread.id)
    with pytest.raises(NotFoundError):
        client.beta.threads.messages.delete(rest[1], thread_id=thread.id)
    assert [m.id for m in client.beta.threads.messages.list(thread.id, order="asc")] == \
        [plain.id, blocks.id, rest[0], rest[2]]


# ---------------------------------------------------------------- files

def test_files_create_list_content_delete(client, log, tmp_path):
    source = tmp_path / "report.csv"
    source.write_bytes(b"city,temp\nParis,21\n" * 500)
    with source.open("rb") as fh:
        from_file = client.files.create(file=fh, purpose="assistants")
    assert from_file.id.startswith("file-") and from_file.object == "file"
    assert (from_file.filename, from_file.bytes, from_file.purpose, from_file.status) == \
        ("report.csv", source.stat().st_size, "assistants", "processed")

    from_path = client.files.create(file=source, purpose="user_data")
    payload = bytes(range(256)) * 10
    from_tuple = client.files.create(file=("blob.bin", payload, "application/octet-stream"), purpose="assistants")
    assert from_path.filename == "report.csv" and from_tuple.bytes == len(payload)
    assert client.files.wait_for_processing(from_tuple.id).status == "processed"

    ids = [from_file.id, from_path.id, from_tuple.id]
    log.requests.clear()
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids
    assert len(log.gets("/files")) == 2
    assert [f.id for f in client.files.list()] == ids[::-1]
    assert [f.id for f in client.files.list(purpose="user_data")] == [from_path.id]

    got = client.files.retrieve(from_tuple.id)
    assert (got.id, got.filename, got.bytes) == (from_tuple.id, "blob.bin", len(payload))

    content = client.files.content(from_tuple.id)
    assert content.content == payload
    client.files.content(from_file.id).write_to_file(tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_bytes() == source.read_bytes()

    deleted = client.files.delete(from_tuple.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (from_tuple.id, "file", True)
    with pytest.raises(NotFoundError):
        client.files.retrieve(from_tuple.id)
    with pytest.raises(NotFoundError):
        client.files.content(from_tuple.id)
    assert [f.id for f in client.files.list(order="asc")] == ids[:2]


# ---------------------------------------------------------------- errors

def test_unknown_ids_raise_not_found(client):
    thread = client.beta.threads.create()
    calls = [
        lambda: client.beta.assistants.retrieve("asst_nope"),
        lambda: client.beta.assistants.update("asst_nope", name="x"),
        lambda: client.beta.assistants.delete("asst_nope"),
        lambda: client.beta.threads.retrieve("thread_nope"),
        lambda: client.beta.threads.update("thread_nope", metadata={}),
        lambda: client.beta.threads.delete("thread_nope"),
        lambda: client.beta.threads.messages.list("thread_nope"),
        lambda: client.beta.threads.messages.retrieve("msg_nope", thread_id=thread.id),
        lambda: client.beta.threads.messages.update("msg_nope", thread_id=thread.id, metadata={}),
        lambda: client.files.retrieve("file-nope"),
        lambda: client.files.delete("file-nope"),
    ]
    for call in calls:
        with pytest.raises(NotFoundError) as info:
            call()
        assert info.value.body["type"] == "invalid_request_error" and "nope" in info.value.message


def test_bad_key_raises_authentication_error(service):
    with OpenAI(base_url=f"{service.url}/v1", api_key="tl-not-a-real-key", max_retries=0) as bad:
        with pytest.raises(AuthenticationError) as info:
            bad.beta.assistants.list()
        assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
        with pytest.raises(AuthenticationError):
            bad.files.create(file=("a.txt", b"a"), purpose="assistants")
    with AzureOpenAI(azure_endpoint=service.url, api_key="tl-wrong", api_version="2024-05-01-preview",
                     max_retries=0) as bad_azure:
        with pytest.raises(AuthenticationError):
            bad_azure.beta.threads.create()


def test_validation_error_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.beta.assistants.create(model="gpt-4o", metadata={f"k{i}": "v" for i in range(17)})
    assert info.value.status_code == 400 and info.value.param == "metadata"


# ---------------------------------------------------------------- AzureOpenAI

def test_azure_openai_client_uses_openai_prefix_and_api_key_header(service, key):
    log = RequestLog()
    http = openai.DefaultHttpxClient(event_hooks={"request": [log]})
    with AzureOpenAI(azure_endpoint=service.url, api_key=key, api_version="2024-05-01-preview",
                     max_retries=0, http_client=http) as client:
        assistant = client.beta.assistants.create(model="my-deployment", name="via-azure")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi from azure"}])
        messages = list(client.beta.threads.messages.list(thread.id))
        uploaded = client.files.create(file=("az.txt", b"azure bytes"), purpose="assistants")
        assert client.files.content(uploaded.id).content == b"azure bytes"
        assert [a.id for a in client.beta.assistants.list()] == [assistant.id]
        assert client.beta.assistants.delete(assistant.id).deleted is True
    assert messages[0].content[0].text.value == "hi from azure"
    method, url, headers = log.requests[0]
    assert url.startswith(f"{service.url}/openai/assistants?") and "api-version=2024-05-01-preview" in url
    assert headers.get("api-key") == key and "authorization" not in headers


# ---------------------------------------------------------------- async

async def test_async_client_end_to_end(service, key, tmp_path):
    log = RequestLog()
    http = openai.DefaultAsyncHttpxClient(event_hooks={"request": [log.async_hook]})
    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0, http_client=http) as client:
        ids = [(await client.beta.assistants.create(model="gpt-4o", name=f"x{i}")).id for i in range(3)]
        log.requests.clear()
        assert [a.id async for a in client.beta.assistants.list(limit=2, order="asc")] == ids
        assert len(log.gets("/assistants")) == 2
        assert (await client.beta.assistants.update(ids[0], description="d")).description == "d"
        assert (await client.beta.assistants.retrieve(ids[0])).description == "d"

        thread = await client.beta.threads.create(metadata={"mode": "async"})
        assert (await client.beta.threads.retrieve(thread.id)).metadata == {"mode": "async"}
        assert (await client.beta.threads.update(thread.id, metadata={"mode": "aio"})).metadata == {"mode": "aio"}
        sent = [(await client.beta.threads.messages.create(thread.id, role="user", content=f"m{i}")).id
                for i in range(5)]
        assert [m.id async for m in client.beta.threads.messages.list(thread.id, limit=2, order="asc")] == sent
        updated = await client.beta.threads.messages.update(sent[0], thread_id=thread.id, metadata={"a": "b"})
        assert updated.metadata == {"a": "b"}
        assert (await client.beta.threads.messages.retrieve(sent[0], thread_id=thread.id)).metadata == {"a": "b"}
        assert (await client.beta.threads.messages.delete(sent[4], thread_id=thread.id)).deleted is True
        assert [m.id async for m in client.beta.threads.messages.list(thread.id)] == sent[3::-1]

        uploaded = await client.files.create(file=("async.txt", b"async bytes"), purpose="assistants")
        assert [f.id async for f in client.files.list()] == [uploaded.id]
        assert (await client.files.retrieve(uploaded.id)).filename == "async.txt"
        assert (await client.files.content(uploaded.id)).content == b"async bytes"
        assert (await client.files.delete(uploaded.id)).deleted is True
        with pytest.raises(NotFoundError):
            await client.files.retrieve(uploaded.id)

        assert (await client.beta.threads.delete(thread.id)).deleted is True
        with pytest.raises(NotFoundError):
            await client.beta.threads.retrieve(thread.id)
        for assistant_id in ids:
            await client.beta.assistants.delete(assistant_id)
        assert [a async for a in client.beta.assistants.list()] == []

    async with AsyncOpenAI(base_url=f"{service.url}/v1", api_key="tl-wrong", max_retries=0) as bad:
        with pytest.raises(AuthenticationError):
            await bad.beta.threads.create()
