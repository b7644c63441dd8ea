"""What is encrypted at rest comes from the marks on the event types (events/types.py): every content
string an event carries is ciphertext in its JSON, and a new type's marked fields are found wherever
they sit (in lists, unions, optional and nested structs). Pure: no database."""

from __future__ import annotations

import json
import os
from typing import Annotated

import msgspec

from events import cipher
from events.types import (
    JSON, FunctionCall, FunctionCallBody, MessageCompleted, MessageCreated, MessageIncomplete, MessageTextAppended,
    RunCreated, RunRequiredAction, RunStepCreated, Sealed, TextPart, TextValue, ToolCallArgumentsAppended,
    ToolCallsExecuted, ToolOutputsSubmitted, seals,
)

SECRET = "the patient's diagnosis"
KEY = os.urandom(32)
STREAM = "thread-t1"
CALL = FunctionCall(id="call_1", function=FunctionCallBody(name="lookup", arguments=SECRET))
ANSWERED = FunctionCall(id="call_1", function=FunctionCallBody(name="lookup", arguments="{}", output=SECRET))
TEXT = [TextPart(TextValue(SECRET))]

CONTENT_EVENTS = [
    MessageCreated(message_id="m", thread_id="t1", role="user", created_at=1, content=TEXT),
    MessageTextAppended(message_id="m", run_id="r", index=0, text=SECRET),
    MessageCompleted(message_id="m", completed_at=1, content=TEXT),
    MessageIncomplete(message_id="m", incomplete_at=1, reason="max_tokens", content=TEXT),
    RunCreated(run_id="r", thread_id="t1", assistant_id="a", created_at=1, expires_at=2, model="m",
               instructions=SECRET),
    RunStepCreated(step_id="s", run_id="r", created_at=1, type="tool_calls", tool_calls=[CALL]),
    ToolCallArgumentsAppended(run_id="r", step_id="s", index=0, arguments=SECRET),
    RunRequiredAction(run_id="r", step_id="s", tool_calls=[CALL]),
    RunRequiredAction(run_id="r", step_id="s", tool_calls=[CALL], step_calls=[ANSWERED, CALL]),
    ToolOutputsSubmitted(run_id="r", step_id="s", submitted_at=1, tool_calls=[ANSWERED]),
    ToolCallsExecuted(run_id="r", step_id="s", completed_at=1, tool_calls=[ANSWERED]),
]


def test_every_content_string_is_ciphertext_in_the_log_and_comes_back():
    for event in CONTENT_EVENTS:
        name = type(event).__name__
        doc = msgspec.to_builtins(event)
        assert cipher.seal(doc, name, KEY, STREAM), name
        stored = json.dumps(doc)
        assert SECRET not in stored and cipher.PREFIX in stored, (name, stored)
        cipher.unseal(doc, name, KEY, STREAM)
        assert doc == msgspec.to_builtins(event), name
        cipher.seal(doc, name, KEY, STREAM)
        cipher.unseal(doc, name, None, STREAM)      # the key destroyed: erased, not readable
        assert SECRET not in json.dumps(doc) and cipher.ERASED in json.dumps(doc), name


def test_ids_and_shape_stay_readable():
    doc = msgspec.to_builtins(CONTENT_EVENTS[5])
    cipher.seal(doc, "RunStepCreated", KEY, STREAM)
    call = doc["tool_calls"][0]
    assert (call["id"], call["function"]["name"], doc["step_id"]) == ("call_1", "lookup", "s")


class Quote(msgspec.Struct):
    said: Sealed
    by: str


class Reply(msgspec.Struct, tag="reply"):
    body: Sealed


class Note(msgspec.Struct, tag="note"):
    title: str
    quotes: list[Quote] = []


class SomethingNew(msgspec.Struct):
    """A type a later feature might add: its marks are found without any list to update."""
    id: str
    summary: Sealed | None = None
    parts: list[Reply | Note] = []
    raw: Annotated[JSON, seals(("request", "prompt"))] = {}
    calls: Annotated[list[JSON], seals(("*", "function", "arguments"))] = []


def test_marks_are_found_wherever_they_sit():
    assert cipher.sealed_paths(SomethingNew) == (
        ("summary",), ("parts", "*", "body"), ("parts", "*", "quotes", "*", "said"),
        ("raw", "request", "prompt"), ("calls", "*", "function", "arguments"))
    assert cipher.sealed_paths(Quote) == (("said",),)
