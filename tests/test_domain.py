"""Pure domain logic: decide and evolve, without I/O."""

from __future__ import annotations

import itertools

import pytest

from events.types import (
    AgentCreated, AgentDeleted, AgentUpdated, FileDeleted, FileUploaded, MessageCreated, MessageDeleted,
    MessageUpdated, TextPart, TextValue, ThreadCreated, ThreadDeleted, ThreadUpdated,
)
from service.domain import agent, file, thread
from service.domain.facts import MessageExists
from service.domain.messages import NewMessage
from service.domain.errors import InvalidRequest, NotFound

P = "proj"


def fold(evolve, state, events):
    for e in events:
        state = evolve(state, e)
    return state


def new(i: int = 0) -> NewMessage:
    """A message as a client adds it."""
    return NewMessage(message_id=f"msg_{i}", role="user", content=[TextPart(TextValue(str(i)))])


def msg(i: int = 0, thread_id: str = "thread_1") -> MessageCreated:
    """The event adding new(i) to the thread at time 1 makes."""
    return MessageCreated(message_id=f"msg_{i}", thread_id=thread_id, created_at=1, role="user",
                          content=[TextPart(TextValue(str(i)))])


def create(messages=(), at: int = 1) -> thread.CreateThread:
    return thread.CreateThread(project=P, at=at, messages=list(messages))


def created_thread(messages=()) -> thread.ThreadState:
    s0 = thread.ThreadState("thread_1")
    return fold(thread.evolve, s0, thread.decide(s0, create(messages)))


class TestThread:
    def test_create_with_messages_emits_created_then_each_message(self):
        s0 = thread.ThreadState("thread_1")
        events = thread.decide(s0, thread.CreateThread(project=P, at=1, metadata={"k": "v"}, messages=[new(1), new(2)]))
        assert events == [ThreadCreated(thread_id="thread_1", project=P, created_at=1, metadata={"k": "v"}),
                          msg(1), msg(2)]
        s = fold(thread.evolve, s0, events)
        assert (s.version, s.project, s.message_count, s.deleted) == (3, P, 2, False)

    def test_create_twice_is_a_no_op(self):
        s = created_thread()
        assert thread.decide(s, create(at=2)) == []

    @pytest.mark.parametrize("cmd", [
        thread.UpdateThread(P, metadata={"a": "b"}),
        thread.DeleteThread(P),
        thread.AddMessage(P, 1, new()),
        thread.UpdateMessage(P, "msg_0", {"a": "b"}),
        thread.DeleteMessage(P, "msg_0"),
    ])
    def test_every_command_on_a_missing_deleted_or_foreign_thread_is_not_found(self, cmd):
        missing = thread.ThreadState("thread_1")
        deleted = fold(thread.evolve, created_thread(), [ThreadDeleted(thread_id="thread_1")])
        foreign = created_thread()
        foreign.project = "other"
        for state in (missing, deleted, foreign):
            with pytest.raises(NotFound, match="No thread found with id 'thread_1'."):
                thread.decide(state, cmd, {MessageExists("msg_0"): True})

    def test_add_update_delete_message(self):
        s = created_thread()
        events = thread.decide(s, thread.AddMessage(P, 1, new(7)))
        assert events == [msg(7)]
        s = fold(thread.evolve, s, events)
        assert s.message_count == 1
        assert thread.needs(s, thread.UpdateMessage(P, "msg_7", {"k": "v"})) == (MessageExists("msg_7"),)
        exists = {MessageExists("msg_7"): True}
        assert thread.decide(s, thread.UpdateMessage(P, "msg_7", {"k": "v"}), exists) == [
            MessageUpdated(message_id="msg_7", metadata={"k": "v"})]
        events = thread.decide(s, thread.DeleteMessage(P, "msg_7"), exists)
        assert events == [MessageDeleted(message_id="msg_7")]
        assert fold(thread.evolve, s, events).message_count == 0

    @pytest.mark.parametrize("make", [
        lambda: thread.UpdateMessage(P, "msg_x", {}),
        lambda: thread.DeleteMessage(P, "msg_x"),
    ])
    def test_unknown_message_is_not_found(self, make):
        for facts in ({MessageExists("msg_x"): False}, {}):     # a fact not given: no such message
            with pytest.raises(NotFound, match="No message found with id 'msg_x'."):
                thread.decide(created_thread(), make(), facts)

    def test_update_thread_carries_only_what_changed(self):
        [event] = thread.decide(created_thread(), thread.UpdateThread(P, metadata={"a": "1"}))
        assert event == ThreadUpdated(thread_id="thread_1", metadata={"a": "1"})

    def test_message_limit_is_exact(self):
        s = created_thread()
        s.message_count = thread.MAX_MESSAGES - 1
        s = fold(thread.evolve, s, thread.decide(s, thread.AddMessage(P, 1, new(1))))
        assert s.message_count == thread.MAX_MESSAGES
        with pytest.raises(InvalidRequest, match="at most 100000"):
            thread.decide(s, thread.AddMessage(P, 1, new(2)))
        # Deleting one makes room again.
        s = fold(thread.evolve, s, [MessageDeleted(message_id="msg_1")])
        assert thread.decide(s, thread.AddMessage(P, 1, new(3))) == [msg(3)]

    def test_create_with_too_many_messages_is_refused(self):
        s0 = thread.ThreadState("thread_1")
        too_many = create([new(0)] * (thread.MAX_MESSAGES + 1))
        with pytest.raises(InvalidRequest):
            thread.decide(s0, too_many)

    def test_version_counts_every_event(self):
        events = [ThreadCreated(thread_id="thread_1", project=P, created_at=1), msg(1), ThreadUpdated(thread_id="thread_1"),
                  MessageUpdated(message_id="msg_1", metadata={}), MessageDeleted(message_id="msg_1"),
                  ThreadDeleted(thread_id="thread_1")]
        for n in range(len(events) + 1):
            assert fold(thread.evolve, thread.ThreadState("thread_1"), events[:n]).version == n

    def test_message_count_is_creates_minus_deletes_for_any_interleaving(self):
        ops = [msg(1), msg(2), MessageDeleted(message_id="msg_1"), msg(3), MessageDeleted(message_id="msg_3")]
        for perm in itertools.permutations(ops):
            s = fold(thread.evolve, created_thread(), perm)
            assert s.message_count == 1


class TestAgent:
    def created(self):
        return AgentCreated(agent_id="asst_1", project=P, created_at=1, model="m")

    def test_lifecycle(self):
        s0 = agent.AgentState("asst_1")
        events = agent.decide(s0, agent.CreateAgent(P, 1, agent.AgentSettings(model="m")))
        assert events == [self.created()]
        s = fold(agent.evolve, s0, events)
        assert (s.version, s.project) == (1, P)
        assert agent.decide(s, agent.UpdateAgent(P, {"name": "n"})) == [AgentUpdated(agent_id="asst_1", name="n")]
        events = agent.decide(s, agent.DeleteAgent(P))
        assert events == [AgentDeleted(agent_id="asst_1")]
        s = fold(agent.evolve, s, events)
        with pytest.raises(NotFound, match="No assistant found with id 'asst_1'."):
            agent.decide(s, agent.DeleteAgent(P))

    def test_foreign_or_missing_is_not_found(self):
        s = fold(agent.evolve, agent.AgentState("asst_1"), [self.created()])
        for state, project in ((s, "other"), (agent.AgentState("asst_1"), P)):
            with pytest.raises(NotFound):
                agent.decide(state, agent.UpdateAgent(project, {}))


class TestFile:
    def test_lifecycle(self):
        s0 = file.FileState("file-1")
        events = file.decide(s0, file.UploadFile(project=P, at=1, filename="a", purpose="assistants", bytes=3,
                                                 sha256="x", lifetime=60))
        assert events == [FileUploaded(file_id="file-1", project=P, created_at=1, filename="a", purpose="assistants",
                                       bytes=3, sha256="x", expires_at=61)]
        s = fold(file.evolve, s0, events)
        with pytest.raises(NotFound):
            file.decide(s, file.DeleteFile("other"))
        events = file.decide(s, file.DeleteFile(P))
        assert events == [FileDeleted(file_id="file-1")]
        with pytest.raises(NotFound, match="No file found with id 'file-1'."):
            file.decide(fold(file.evolve, s, events), file.DeleteFile(P))


def test_domain_refusals_carry_no_http_status_and_the_api_maps_each_kind():
    """The domain says what was refused; only the API layer knows HTTP (404, 409, else 400)."""
    import json

    from service.actors import TooMuchContention
    from service.api.errors import domain_error_response
    from service.domain.errors import DomainError, InvalidRequest, NotFound

    cases = [(NotFound("thread", "t1"), 404), (TooMuchContention("thread-t1"), 409),
             (InvalidRequest("Thread t1 already has an active run r1.", param="thread_id"), 400)]
    for error, status in cases:
        assert not hasattr(error, "status") and isinstance(error, DomainError)
        response = domain_error_response(error)
        body = json.loads(response.body)["error"]
        assert (response.status, body["message"], body["param"]) == (status, error.message, error.param)


def test_a_deciders_snapshot_schema_follows_the_shape_of_its_state():
    """Older snapshots are ignored exactly when the state's shape changes: no constant to bump."""
    import msgspec

    from service.domain.decider import Decider

    class Before(msgspec.Struct):
        entity_id: str
        version: int = 0

    class Documented(msgspec.Struct):
        """The same shape, described."""
        entity_id: str
        version: int = 0

    class Grown(msgspec.Struct):
        entity_id: str
        version: int = 0
        archived: bool = False

    def schema(state_type) -> int:
        return Decider("x", state_type, lambda s, c, f: [], lambda s, e: s).snapshot_schema

    assert schema(Before) == schema(Documented) != schema(Grown)
    assert thread.DECIDER.initial("thread_9") == thread.ThreadState("thread_9")
    assert thread.DECIDER.stream("thread_9") == "thread-thread_9"
