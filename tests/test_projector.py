"""The projector is pure: events in, read-model changes out, in event order. No database here."""

from __future__ import annotations

import msgspec

from events.types import (
    EVENT_TYPES, AgentCreated, AgentUpdated, MessageCreated, MessageDeleted, MessageUpdated, TextPart, TextValue,
    ThreadCreated, ThreadDeleted, ThreadUpdated,
)
from projections.objects import Message, Thread
from projections.projector import CHANGES, READ_MODELS, read_model_changes


def test_every_event_type_has_a_read_model_change():
    assert set(CHANGES) == set(EVENT_TYPES.values())


def test_changes_follow_event_order_and_carry_api_objects():
    created = ThreadCreated(thread_id="thread_1", project="p", created_at=5, metadata={"a": "1"})
    msg = MessageCreated(message_id="msg_1", thread_id="thread_1", created_at=6, role="user",
                         content=[TextPart(TextValue("hello"))], run_id=None)
    changes = read_model_changes([created, msg, MessageUpdated("msg_1", {"k": "v"}),
                                  ThreadUpdated("thread_1", metadata={"b": "2"}), MessageDeleted("msg_1"),
                                  ThreadDeleted("thread_1")])
    assert [c[0] for c in changes] == ["thread", "message", "message.merge", "thread.merge",
                                       "message.delete", "thread.delete"]
    assert changes[0][3] == Thread(id="thread_1", created_at=5, metadata={"a": "1"})
    assert isinstance(changes[1][4], Message) and changes[1][4].content[0].text.value == "hello"
    assert changes[2] == ("message.merge", "msg_1", {"metadata": {"k": "v"}})
    assert changes[3] == ("thread.merge", "thread_1", {"metadata": {"b": "2"}})   # only what changed


def test_a_cleared_response_format_reads_auto():
    changes = read_model_changes([AgentUpdated("asst_1", response_format=None, name="n")])
    assert changes == [("agent.merge", "asst_1", {"name": "n", "response_format": "auto"})]


def test_the_wire_form_is_one_json_array():
    created = AgentCreated(agent_id="asst_1", project="p", created_at=1, model="m")
    doc = msgspec.json.decode(READ_MODELS.changes([created], [1]))
    assert doc[0][:3] == ["agent", "asst_1", "p"] and doc[0][3]["object"] == "assistant"
