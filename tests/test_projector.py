"""The projector is pure: events in, read-model changes out, in event order. No database here."""

from __future__ import annotations

import msgspec

from events.types import (
    EVENT_TYPES, AgentCreated, AgentUpdated, MessageCreated, MessageDeleted, MessageUpdated, TextPart, TextValue,
    ThreadCreated, ThreadDeleted, ThreadUpdated,
)
from projections.objects import Message, Thread
from projections.changes import Deleted, Merged
from projections.projector import CHANGES, READ_MODELS, read_model_changes
from projections.read_models.messages import MessageWritten
from projections.read_models.threads import ThreadWritten


def test_every_event_type_has_a_read_model_change():
    assert set(CHANGES) == set(EVENT_TYPES.values())


def test_changes_follow_event_order_and_carry_api_objects():
    created = ThreadCreated(thread_id="thread_1", project="p", created_at=5, metadata={"a": "1"})
    msg = MessageCreated(message_id="msg_1", thread_id="thread_1", created_at=6, role="user",
                         content=[TextPart(TextValue("hello"))], run_id=None)
    changes = read_model_changes([created, msg, MessageUpdated("msg_1", {"k": "v"}),
                                  ThreadUpdated("thread_1", metadata={"b": "2"}), MessageDeleted("msg_1"),
                                  ThreadDeleted("thread_1")])
    assert changes[0] == ThreadWritten("thread_1", "p", Thread(id="thread_1", created_at=5, metadata={"a": "1"}))
    assert isinstance(changes[1], MessageWritten) and changes[1].thread_id == "thread_1"
    assert isinstance(changes[1].data, Message) and changes[1].data.content[0].text.value == "hello"
    assert changes[2:] == [Merged("messages", "msg_1", {"metadata": {"k": "v"}}),
                           Merged("threads", "thread_1", {"metadata": {"b": "2"}}),    # only what changed
                           Deleted("messages", "msg_1"), Deleted("threads", "thread_1")]


def test_a_cleared_response_format_reads_auto():
    changes = read_model_changes([AgentUpdated("asst_1", response_format=None, name="n")])
    assert changes == [Merged("agents", "asst_1", {"name": "n", "response_format": "auto"})]


def test_the_wire_form_is_one_json_array():
    created = AgentCreated(agent_id="asst_1", project="p", created_at=1, model="m")
    doc = msgspec.json.decode(READ_MODELS.changes([created], [1]))
    # Named fields, read by name in apply_read_models: the kind first, the object last.
    assert list(doc[0]) == ["kind", "id", "project", "data"]
    assert doc[0]["kind"] == "agent" and doc[0]["id"] == "asst_1" and doc[0]["data"]["object"] == "assistant"


async def test_the_read_model_declarations_match_the_tables_and_what_a_thread_delete_takes(db):
    """Every table with a thread_id column is declared deleted with its thread, and deleting a
    thread through apply_read_models leaves no row of it in any of them."""
    from events.store import EventStore
    from events.types import (
        FunctionCall, FunctionCallBody, RunCreated, RunStepCreated,
    )
    from projections import read_models
    from projections.projector import SERVICE_PROJECTIONS

    tables = {r[0] for r in await db.fetch(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'thread_id' "
        "AND table_name = ANY($1::text[])", list(read_models.rebuilt()))}
    assert tables | {"threads"} == set(read_models.of_thread())
    store = EventStore(db, SERVICE_PROJECTIONS)
    try:
        tid = "thread_decl"
        call = FunctionCall(id="call_1", function=FunctionCallBody(name="f", arguments="{}"))
        await store.append(f"thread-{tid}", 0, [
            ThreadCreated(thread_id=tid, project="p", created_at=1),
            MessageCreated(message_id="msg_d", thread_id=tid, created_at=2, role="user", content=[], run_id=None),
            RunCreated(run_id="run_d", thread_id=tid, assistant_id="a", created_at=3, expires_at=9, model="m",
                       instructions=""),
            RunStepCreated(step_id="step_d", run_id="run_d", created_at=4, type="tool_calls", tool_calls=[call])])
        counts = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t} WHERE {'id' if t == 'threads' else 'thread_id'} = $1)"
                                       for t in read_models.of_thread())
        assert list(await db.fetchrow(counts, tid)) == [1] * len(read_models.of_thread())
        await store.append(f"thread-{tid}", 4, [ThreadDeleted(thread_id=tid)])
        assert list(await db.fetchrow(counts, tid)) == [0] * len(read_models.of_thread())
    finally:
        await store.close()
