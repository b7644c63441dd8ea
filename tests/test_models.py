"""Model providers: the OpenAI-compatible provider against a real local HTTP server, the router,
the builtin models, token counting and context fitting."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest

from service.config import Config
from service.models.base import Finished, ModelError, ModelRequest, TextDelta, ToolCallDelta, Usage
from service.models.builtin import EchoModel, ScriptModel, turn_index
from service.models.context import fit_counted, fit_messages, history_messages, to_chat_messages
from service.models.openai_compat import OpenAICompatProvider, RetryPolicy, Timeouts
from service.models.router import ModelRouter, load_models_file
from service.models.tokens import (
    TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING, count_message, count_messages, count_text,
)
from tests.fake_openai import (
    FakeOpenAI, FakeToolCall, Reply, chunk, error_reply, text_events, text_reply, tool_calls_reply,
)

FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.02)
SHORT_TIMEOUTS = Timeouts(connect=2.0, read=0.5)
USER_HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
async def fake():
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def make_provider():
    """OpenAICompatProvider.create with short timeouts and fast retries, closed after the test."""
    made: list[OpenAICompatProvider] = []

    def make(**options) -> OpenAICompatProvider:
        options = {"model": "fake-model", "api_key": "sk-test", "timeouts": SHORT_TIMEOUTS, "retry": FAST_RETRY,
                   **options}
        made.append(OpenAICompatProvider.create(**options))
        return made[-1]

    yield make
    for provider in made:
        await provider.aclose()


async def collect(provider, request: ModelRequest) -> list:
    return [chunk async for chunk in provider.stream(request)]


async def failure(provider, request: ModelRequest) -> tuple[ModelError, list]:
    received = []
    with pytest.raises(ModelError) as caught:
        async for piece in provider.stream(request):
            received.append(piece)
    return caught.value, received


def text_of(chunks: list) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def tool_calls_of(chunks: list) -> dict[int, dict]:
    calls: dict[int, dict] = {}
    for c in chunks:
        if isinstance(c, ToolCallDelta):
            call = calls.setdefault(c.index, {"id": None, "name": None, "arguments": ""})
            call["id"] = call["id"] or c.id
            call["name"] = call["name"] or c.name
            call["arguments"] += c.arguments
    return calls


# --- OpenAI-compatible provider ------------------------------------------------------------------

async def test_streams_text_then_usage_then_finished(fake, make_provider):
    fake.script(text_reply("Hel", "lo", " world", usage=(12, 3)))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert chunks == [TextDelta("Hel"), TextDelta("lo"), TextDelta(" world"), Usage(12, 3), Finished("stop")]
    sent = fake.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert sent.body["model"] == "fake-model" and sent.body["messages"] == USER_HI
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    for absent in ("tools", "tool_choice", "parallel_tool_calls", "response_format", "temperature",
                   "top_p", "max_tokens", "max_completion_tokens"):
        assert absent not in sent.body


async def test_sends_every_option(fake, make_provider):
    fake.script(text_reply("{}"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    request = ModelRequest(model="x", messages=USER_HI, tools=tools,
                           tool_choice={"type": "function", "function": {"name": "get_weather"}},
                           parallel_tool_calls=False, response_format={"type": "json_object"},
                           temperature=0.2, top_p=0.9, max_tokens=64)
    await collect(make_provider(base_url=fake.url), request)
    body = fake.requests[0].body
    assert body["tools"] == tools
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["parallel_tool_calls"] is False
    assert body["response_format"] == {"type": "json_object"}
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.2, 0.9, 64)

    await collect(make_provider(base_url=fake.url, max_tokens_param="max_completion_tokens"), request)
    assert fake.requests[1].body["max_completion_tokens"] == 64 and "max_tokens" not in fake.requests[1].body


async def test_tool_choice_and_parallel_flag_need_tools(fake, make_provider):
    fake.script(text_reply("ok"))
    await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI, tool_choice="none",
                                                   parallel_tool_calls=True))
    assert "tool_choice" not in fake.requests[0].body and "parallel_tool_calls" not in fake.requests[0].body


async def test_parallel_tool_calls_stream_in_pieces(fake, make_provider):
    fake.script(tool_calls_reply(FakeToolCall("call_a", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']),
                                 FakeToolCall("call_b", "get_time", ['{"tz":', ' "CET"}'])))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI,
                                                            tools=[{"type": "function", "function": {"name": "f"}}]))
    calls = tool_calls_of(chunks)
    assert calls == {0: {"id": "call_a", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                     1: {"id": "call_b", "name": "get_time", "arguments": '{"tz": "CET"}'}}
    assert sum(1 for c in chunks if isinstance(c, ToolCallDelta) and c.id) == 2  # id and name come once
    assert chunks[-2:] == [Usage(20, 9), Finished("tool_calls")]


async def test_tool_call_without_id_gets_one_and_stop_with_calls_means_tool_calls(fake, make_provider):
    fake.script(tool_calls_reply(FakeToolCall(None, "lookup", ["{}"]), finish_reason="stop"))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert tool_calls_of(chunks)[0]["id"].startswith("call_")
    assert chunks[-1] == Finished("tool_calls")


async def test_length_finish_is_reported(fake, make_provider):
    fake.script(text_reply("cut", finish_reason="length"))
    assert (await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI)))[-1] == Finished("length")


async def test_usage_is_counted_when_the_server_reports_none(fake, make_provider):
    fake.script(text_reply("four score and seven", usage=None))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    usage = next(c for c in chunks if isinstance(c, Usage))
    assert usage == Usage(count_messages(USER_HI, "o200k_base"), count_text("four score and seven", "o200k_base"))


async def test_rate_limit_then_success_is_retried(fake, make_provider):
    fake.script(error_reply(429, "slow down", retry_after=0), text_reply("fine"))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert text_of(chunks) == "fine" and len(fake.requests) == 2


async def test_rate_limit_forever_fails_as_rate_limit_exceeded(fake, make_provider):
    fake.script(error_reply(429, "quota exhausted"))
    error, _ = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert (error.code, error.message) == ("rate_limit_exceeded", "quota exhausted")
    assert len(fake.requests) == FAST_RETRY.attempts


async def test_server_error_forever_fails_after_bounded_retries(fake, make_provider):
    fake.script(error_reply(500, "boom"))
    started = time.monotonic()
    error, _ = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error" and len(fake.requests) == FAST_RETRY.attempts
    assert time.monotonic() - started < 2


async def test_bad_request_is_invalid_prompt_with_the_providers_message(fake, make_provider):
    fake.script(error_reply(400, "This model's maximum context length is 8192 tokens."))
    error, _ = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert (error.code, error.message) == ("invalid_prompt", "This model's maximum context length is 8192 tokens.")
    assert len(fake.requests) == 1


async def test_garbage_chunk_is_server_error_without_retry(fake, make_provider):
    fake.script(Reply(events=text_events("partial") + ["{not json"]))
    error, received = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error" and text_of(received) == "partial" and len(fake.requests) == 1


async def test_chunk_of_the_wrong_shape_is_server_error(fake, make_provider):
    fake.script(Reply(events=[{"choices": "nope"}]))
    error, _ = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error" and len(fake.requests) == 1


async def test_error_event_in_stream_is_server_error(fake, make_provider):
    fake.script(Reply(events=text_events("a") + [{"error": {"message": "overloaded mid-stream"}}]))
    error, _ = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert (error.code, error.message) == ("server_error", "overloaded mid-stream")


async def test_stream_ending_without_finish_reason_is_server_error(fake, make_provider):
    fake.script(Reply(events=text_events("half an answer")))
    error, received = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error" and text_of(received) == "half an answer"
    assert len(fake.requests) == 1  # text was passed on: a retry would repeat it


async def test_hang_mid_stream_fails_within_the_read_timeout(fake, make_provider):
    fake.script(Reply(events=text_events("started"), then="hang"))
    started = time.monotonic()
    error, received = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    elapsed = time.monotonic() - started
    assert error.code == "server_error" and text_of(received) == "started"
    assert SHORT_TIMEOUTS.read * 0.9 <= elapsed < SHORT_TIMEOUTS.read + 1.0
    assert len(fake.requests) == 1


async def test_hang_before_any_text_is_retried(fake, make_provider):
    fake.script(Reply(events=text_events(), then="hang"), text_reply("second try"))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert text_of(chunks) == "second try" and len(fake.requests) == 2


async def test_slow_answer_times_out_and_is_retried(fake, make_provider):
    fake.script(text_reply("too slow", delay=30), text_reply("quick"))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert text_of(chunks) == "quick" and len(fake.requests) == 2


async def test_a_waiting_call_can_be_cancelled(fake, make_provider):
    fake.script(Reply(events=text_events("a"), then="hang"))
    provider = make_provider(base_url=fake.url, timeouts=Timeouts(connect=2, read=60))
    task = asyncio.create_task(collect(provider, ModelRequest(model="x", messages=USER_HI)))
    await fake.wait_for_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)


async def test_connection_reset_mid_stream_is_server_error(fake, make_provider):
    fake.script(Reply(events=text_events("so far"), then="reset"))
    error, received = await failure(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error" and text_of(received) == "so far" and len(fake.requests) == 1


async def test_connection_reset_before_the_answer_is_retried(fake, make_provider):
    fake.script(Reply(reset_before_response=True), text_reply("recovered"))
    chunks = await collect(make_provider(base_url=fake.url), ModelRequest(model="x", messages=USER_HI))
    assert text_of(chunks) == "recovered" and len(fake.requests) == 2


async def test_unreachable_server_is_server_error(make_provider):
    provider = make_provider(base_url="http://127.0.0.1:9/v1")
    error, _ = await failure(provider, ModelRequest(model="x", messages=USER_HI))
    assert error.code == "server_error"


async def test_consumer_may_stop_early(fake, make_provider):
    fake.script(Reply(events=text_events("a", "b", "c") + [chunk({}, "stop")], chunk_delay=0.01))
    provider = make_provider(base_url=fake.url)
    stream = provider.stream(ModelRequest(model="x", messages=USER_HI))
    assert await anext(stream) == TextDelta("a")
    await stream.aclose()
    fake.script(text_reply("again"))
    assert text_of(await collect(provider, ModelRequest(model="x", messages=USER_HI))) == "again"


async def test_azure_deployment_and_api_version(fake, make_provider):
    fake.script(text_reply("azure"))
    provider = make_provider(model="gpt-4o", api_key="azure-key", base_url=fake.endpoint,
                             azure_deployment="prod-4o", api_version="2024-10-21")
    assert text_of(await collect(provider, ModelRequest(model="gpt-4o", messages=USER_HI))) == "azure"
    sent = fake.requests[0]
    assert sent.path == "/openai/deployments/prod-4o/chat/completions"
    assert sent.query["api-version"] == "2024-10-21" and sent.headers["api-key"] == "azure-key"


def test_backoff_is_bounded_and_honours_retry_after():
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=4.0)
    assert all(0 <= policy.delay(n) <= min(4.0, 0.5 * 2 ** (n - 1)) for n in range(1, 10) for _ in range(20))
    assert policy.delay(1, retry_after=3.0) == 3.0
    assert policy.delay(1, retry_after=60.0) <= 0.5  # too long a wait: our own backoff instead


# --- router --------------------------------------------------------------------------------------

async def test_router_sends_table_models_to_their_server(fake, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-from-env")
    models = tmp_path / "models.json"
    models.write_text(json.dumps(fake.models_file_content(
        "local-llama", api_key_env="FAKE_KEY", model="llama-3.1-8b", context_window=8192, encoding="llama3",
        read_timeout=0.5, max_attempts=2, retry_base_delay=0.01)))
    router = ModelRouter.from_config(Config.from_env({"THREADLINE_MODELS": str(models)}))
    provider, info = router.resolve("local-llama")
    assert (info.context_window, info.encoding) == (8192, "llama3")
    assert router.resolve("local-llama")[0] is provider
    fake.script(text_reply("hello"))
    assert text_of(await collect(provider, ModelRequest(model="local-llama", messages=USER_HI))) == "hello"
    assert fake.requests[0].body["model"] == "llama-3.1-8b"
    assert fake.requests[0].headers["Authorization"] == "Bearer sk-from-env"
    await router.aclose()


async def test_router_default_provider_comes_from_openai_env(fake):
    router = ModelRouter.from_config(Config.from_env({"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "sk-default"}))
    provider, info = router.resolve("gpt-4")
    assert info.encoding == "cl100k_base"
    fake.script(text_reply("default"))
    assert text_of(await collect(provider, ModelRequest(model="gpt-4", messages=USER_HI))) == "default"
    assert fake.requests[0].body["model"] == "gpt-4"
    await router.aclose()


def test_router_errors(tmp_path, monkeypatch):
    router = ModelRouter({})
    with pytest.raises(ModelError) as unconfigured:
        router.resolve("gpt-4o")
    assert unconfigured.value.code == "server_error"
    with pytest.raises(ModelError) as unknown_builtin:
        router.resolve("builtin/nope")
    assert unknown_builtin.value.code == "invalid_prompt"

    monkeypatch.delenv("MISSING_KEY", raising=False)
    models = tmp_path / "models.json"
    models.write_text(json.dumps({"models": {"m": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "MISSING_KEY"}}}))
    with pytest.raises(ModelError, match="MISSING_KEY"):
        ModelRouter(load_models_file(models)).resolve("m")
    models.write_text(json.dumps({"models": {"m": {"encoding": "no-such-encoding"}}}))
    with pytest.raises(ValueError, match="no-such-encoding"):
        load_models_file(models)
    models.write_text(json.dumps({"models": {"m": {"base_uri": "typo"}}}))
    with pytest.raises(ValueError, match="base_uri"):
        load_models_file(models)


def test_router_builtins(tmp_path):
    router = ModelRouter({})
    assert isinstance(router.resolve("builtin/echo")[0], EchoModel)
    script = router.resolve(f"builtin/script:{tmp_path / 's.json'}")[0]
    assert isinstance(script, ScriptModel) and script.path == str(tmp_path / "s.json")
    assert router.resolve("builtin/script")[0].path is None


# --- builtin models ------------------------------------------------------------------------------

async def test_echo_streams_the_last_user_message_word_by_word():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "say it back please"},
                                             {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    chunks = await collect(EchoModel(), ModelRequest(model="builtin/echo", messages=messages))
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert texts == ["say ", "it ", "back ", "please"]
    assert chunks[-2:] == [Usage(count_messages(messages, "o200k_base"), count_text("say it back please", "o200k_base")),
                           Finished("stop")]


async def test_a_prompt_the_caller_has_counted_is_not_counted_again():
    """The run engine counts each message to fit the window; a long prompt is not counted twice."""
    messages = [{"role": "user", "content": "count me"}]
    counted = ModelRequest(model="builtin/echo", messages=messages, counted=("o200k_base", 12345))
    assert (await collect(EchoModel(), counted))[-2] == Usage(12345, count_text("count me", "o200k_base"))
    elsewhere = ModelRequest(model="builtin/echo", messages=messages, counted=("cl100k_base", 12345))
    assert (await collect(EchoModel(), elsewhere))[-2].prompt_tokens == count_messages(messages, "o200k_base")


def write_script(tmp_path: Path, turns: list[dict]) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"turns": turns}))
    return str(path)


def run_messages(tool_rounds: int) -> list[dict]:
    messages = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "earlier answer"},
                {"role": "user", "content": "weather?"}]
    for n in range(tool_rounds):
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{n}", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]})
        messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": "sunny"})
    return messages


def test_turn_index_counts_assistant_messages_after_the_last_user_message():
    assert [turn_index(run_messages(n)) for n in range(3)] == [0, 1, 2]
    assert turn_index([]) == 0


async def test_script_plays_turns_in_order_and_repeats_the_last(tmp_path):
    path = write_script(tmp_path, [
        {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}},
                        {"name": "get_time", "arguments": '{"tz": "CET"}'}]},
        {"text": "It is sunny in Paris."},
    ])
    model = ScriptModel(path)
    first = await collect(model, ModelRequest(model="s", messages=run_messages(0)))
    calls = tool_calls_of(first)
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("get_weather", {"city": "Paris"}), ("get_time", {"tz": "CET"})]
    assert all(c["id"].startswith("call_") for c in calls.values()) and calls[0]["id"] != calls[1]["id"]
    assert isinstance(first[-2], Usage) and first[-2].completion_tokens > 0 and first[-1] == Finished("tool_calls")

    second = await collect(model, ModelRequest(model="s", messages=run_messages(1)))
    assert text_of(second) == "It is sunny in Paris." and len([c for c in second if isinstance(c, TextDelta)]) > 1
    assert second[-1] == Finished("stop")
    assert text_of(await collect(model, ModelRequest(model="s", messages=run_messages(5)))) == "It is sunny in Paris."


async def test_script_errors_and_finish_reason(tmp_path):
    path = write_script(tmp_path, [{"error": {"code": "rate_limit_exceeded", "message": "scripted 429"}}])
    error, _ = await failure(ScriptModel(path), ModelRequest(model="s", messages=USER_HI))
    assert (error.code, error.message) == ("rate_limit_exceeded", "scripted 429")

    path = write_script(tmp_path, [{"text": "cut off", "finish_reason": "length"}])
    assert (await collect(ScriptModel(path), ModelRequest(model="s", messages=USER_HI)))[-1] == Finished("length")


async def test_script_delays(tmp_path):
    path = write_script(tmp_path, [{"text": "a b c", "delay": 0.2, "chunk_delay": 0.05}])
    stream = ScriptModel(path).stream(ModelRequest(model="s", messages=USER_HI))
    started = time.monotonic()
    await anext(stream)
    assert time.monotonic() - started >= 0.19
    await anext(stream)
    assert time.monotonic() - started >= 0.24
    await stream.aclose()


async def test_slow_script_turn_can_be_cancelled(tmp_path):
    path = write_script(tmp_path, [{"text": "too late", "delay": 40}])
    task = asyncio.create_task(collect(ScriptModel(path), ModelRequest(model="s", messages=USER_HI)))
    await asyncio.sleep(0)  # let it start waiting
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=2)


async def test_script_from_env_and_bad_scripts(tmp_path):
    router = ModelRouter.from_config(Config.from_env({"THREADLINE_SCRIPT": write_script(tmp_path, [{"text": "from env"}])}))
    script, _ = router.resolve("builtin/script")
    assert text_of(await collect(script, ModelRequest(model="builtin/script", messages=USER_HI))) == "from env"

    script, _ = ModelRouter.from_config(Config.from_env({})).resolve("builtin/script")
    error, _ = await failure(script, ModelRequest(model="builtin/script", messages=USER_HI))
    assert error.code == "server_error"
    error, _ = await failure(ScriptModel(str(tmp_path / "missing.json")), ModelRequest(model="s", messages=USER_HI))
    assert error.code == "server_error" and "missing.json" in error.message
    bad = tmp_path / "bad.json"
    bad.write_text('{"turns": [{"txt": "typo"}]}')
    error, _ = await failure(ScriptModel(str(bad)), ModelRequest(model="s", messages=USER_HI))
    assert error.code == "server_error" and "txt" in error.message


# --- tokens --------------------------------------------------------------------------------------

def test_count_text():
    assert count_text("", "o200k_base") == 0
    assert count_text("hello world", "o200k_base") == 2
    assert count_text("hello world", "cl100k_base") == 2
    assert count_text("<|endoftext|>", "o200k_base") > 1  # special-token text counts as plain text
    with pytest.raises(ValueError):
        count_text("x", "no-such-encoding")


def test_count_messages():
    enc = "o200k_base"
    user = {"role": "user", "content": "hello world"}
    assert count_message(user, enc) == TOKENS_PER_MESSAGE + count_text("user", enc) + 2
    assert count_messages([user], enc) == count_message(user, enc) + TOKENS_REPLY_PRIMING
    with_image = {"role": "user", "content": [{"type": "text", "text": "hello world"},
                                              {"type": "image_url", "image_url": {"url": "data:,"}}]}
    assert count_message(with_image, enc) == count_message(user, enc) + TOKENS_PER_IMAGE
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert count_message(call, enc) > count_message({"role": "assistant", "content": None}, enc) + 5


# --- context -------------------------------------------------------------------------------------

def api_message(role: str, *parts: dict) -> dict:
    return {"id": "msg_1", "object": "thread.message", "role": role, "content": list(parts)}


def text_part(value: str) -> dict:
    return {"type": "text", "text": {"value": value, "annotations": []}}


def test_to_chat_messages():
    messages = [
        api_message("user", text_part("look at these"),
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                    {"type": "image_file", "image_file": {"file_id": "file_ok", "detail": "high"}},
                    {"type": "image_file", "image_file": {"file_id": "file_gone"}}),
        api_message("assistant", text_part("two images"), text_part("nice")),
        api_message("user", text_part("thanks")),
    ]
    urls = {"file_ok": "data:image/png;base64,AAAA"}
    chat = to_chat_messages("Be brief.", messages, urls.get)
    assert chat == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "look at these"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}]},
        {"role": "assistant", "content": "two images\n\nnice"},
        {"role": "user", "content": "thanks"},
    ]
    assert to_chat_messages(None, messages, urls.get) == chat[1:] == history_messages(messages, urls.get)


def conversation(count: int, words: int = 50) -> list[dict]:
    return [{"role": "user" if n % 2 == 0 else "assistant", "content": f"message {n} " + "word " * words}
            for n in range(count)]


def tool_round(call_ids: list[str]) -> list[dict]:
    return [{"role": "assistant", "content": None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": "f", "arguments": "{}"}} for cid in call_ids]}] + \
        [{"role": "tool", "tool_call_id": cid, "content": "result " * 50} for cid in call_ids]


SYSTEM = [{"role": "system", "content": "You are helpful."}]
AUTO = {"type": "auto", "last_messages": None}


def test_fit_keeps_everything_that_fits():
    history = conversation(6)
    assert fit_messages(SYSTEM, history, context_window=128_000, max_prompt_tokens=None, reserve=1000,
                        strategy=AUTO, encoding="o200k_base") == SYSTEM + history


def test_fit_last_messages():
    history = conversation(6)
    fitted = fit_messages(SYSTEM, history, context_window=128_000, max_prompt_tokens=None, reserve=0,
                          strategy={"type": "last_messages", "last_messages": 2}, encoding="o200k_base")
    assert fitted == SYSTEM + history[-2:]


def test_fit_last_messages_does_not_count_the_runs_tool_rounds():
    history = conversation(5) + tool_round(["call_1", "call_2"]) + tool_round(["call_3"])
    fitted = fit_messages(SYSTEM, history, context_window=128_000, max_prompt_tokens=None, reserve=0,
                          strategy={"type": "last_messages", "last_messages": 1}, encoding="o200k_base")
    assert fitted == SYSTEM + history[4:]


def test_fit_auto_drops_the_oldest_until_it_fits():
    history = conversation(10)
    per_message = count_message(history[0], "o200k_base")
    budget = count_messages(SYSTEM, "o200k_base") + 3 * per_message + 5
    fitted = fit_messages(SYSTEM, history, context_window=budget + 100, max_prompt_tokens=None, reserve=100,
                          strategy=AUTO, encoding="o200k_base")
    assert fitted == SYSTEM + history[-3:]
    assert count_messages(fitted, "o200k_base") <= budget
    assert fit_messages(SYSTEM, history, context_window=128_000, max_prompt_tokens=budget, reserve=0,
                        strategy=AUTO, encoding="o200k_base") == fitted


def test_fit_never_splits_a_tool_round():
    history = conversation(3) + tool_round(["call_1", "call_2", "call_3"]) + [
        {"role": "assistant", "content": "done"}]
    round_tokens = sum(count_message(m, "o200k_base") for m in history[3:7])
    last_tokens = count_message(history[-1], "o200k_base")
    exact = count_messages(SYSTEM, "o200k_base") + round_tokens + last_tokens
    fitted = fit_messages(SYSTEM, history, context_window=exact, max_prompt_tokens=None, reserve=0,
                          strategy=AUTO, encoding="o200k_base")
    assert fitted == SYSTEM + history[3:]
    # One token short of the whole round: all of it goes, not just some of its messages.
    fitted = fit_messages(SYSTEM, history, context_window=exact - 1, max_prompt_tokens=None, reserve=0,
                          strategy=AUTO, encoding="o200k_base")
    assert fitted == SYSTEM + history[-1:]


def reference_fit(system: list[dict], history: list[dict], budget: int, keep: int | None) -> list[dict]:
    """fit_messages as its docstring says it, one message at a time (as it was first written)."""
    units: list[list[dict]] = []
    for m in history:
        if m["role"] == "tool" and units and units[-1][0].get("tool_calls"):
            units[-1].append(m)
        else:
            units.append([m])
    if keep is not None:
        # From just after the (keep + 1)-th last conversation message: tool rounds stay with what follows them.
        conversation_units = [i for i, u in enumerate(units) if u[0]["role"] in ("user", "assistant")
                              and not u[0].get("tool_calls")]
        first = conversation_units[-keep - 1] + 1 if keep < len(conversation_units) else 0
        units = units[min(first, len(units) - 1):]
    while len(units) > 1 and count_messages(system + [m for u in units for m in u], "o200k_base") > budget:
        units = units[1:]
    return system + [m for u in units for m in u]


def test_fit_counted_fits_as_the_reference_and_counts_the_prompt():
    rnd = random.Random(3)
    for _ in range(1500):
        plain = conversation(rnd.randint(0, 12), words=rnd.randint(1, 30))
        rounds = [m for _ in range(rnd.randint(0, 2)) for m in tool_round([f"call_{rnd.randint(0, 99)}"])]
        history = plain + rounds + ([{"role": "assistant", "content": "done"}] if rounds and rnd.random() < 0.5 else [])
        system = SYSTEM if rnd.random() < 0.7 else []
        keep = rnd.choice([None, 0, 1, 3, 20])
        strategy = AUTO if keep is None else {"type": "last_messages", "last_messages": keep}
        window, reserve = rnd.randint(0, 1500), rnd.randint(0, 100)
        fitted = fit_counted(system, history, [count_message(m, "o200k_base") for m in system],
                             [count_message(m, "o200k_base") for m in history], context_window=window,
                             max_prompt_tokens=None, reserve=reserve, strategy=strategy, plain=len(plain))
        assert fitted.messages == reference_fit(system, history, window - reserve, keep)
        assert fitted.messages == fit_messages(system, history, context_window=window, max_prompt_tokens=None,
                                               reserve=reserve, strategy=strategy, encoding="o200k_base")
        assert fitted.tokens == count_messages(fitted.messages, "o200k_base")


def test_fit_always_keeps_the_last_message_and_its_round():
    history = conversation(4, words=500)
    fitted = fit_messages(SYSTEM, history, context_window=10, max_prompt_tokens=None, reserve=0,
                          strategy=AUTO, encoding="o200k_base")
    assert fitted == SYSTEM + history[-1:]
    history = conversation(2) + tool_round(["call_1"])
    fitted = fit_messages(SYSTEM, history, context_window=10, max_prompt_tokens=None, reserve=0,
                          strategy=AUTO, encoding="o200k_base")
    assert fitted == SYSTEM + history[-2:]
    assert fit_messages(SYSTEM, [], context_window=10, max_prompt_tokens=None, reserve=0, strategy=AUTO,
                        encoding="o200k_base") == SYSTEM
