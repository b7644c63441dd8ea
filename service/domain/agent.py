"""An agent (assistant): created, updated, deleted. Its stream is `agent-<id>`."""

from __future__ import annotations

from typing import Any

import msgspec

from events.types import AgentCreated, AgentDeleted, AgentSettings, AgentUpdated, Event
from service.domain.decider import Decider, created_then_deleted
from service.domain.errors import NotFound
from service.domain.facts import Facts


class AgentState(msgspec.Struct):
    agent_id: str
    version: int = 0
    project: str | None = None
    deleted: bool = False


class CreateAgent(msgspec.Struct, frozen=True):
    project: str
    at: int
    settings: AgentSettings


class UpdateAgent(msgspec.Struct, frozen=True):
    project: str
    changes: dict[str, Any]     # the settings to change, by name (AgentUpdated's fields)


class DeleteAgent(msgspec.Struct, frozen=True):
    project: str


def _require(state: AgentState, project: str) -> None:
    if state.project != project or state.deleted:
        raise NotFound("assistant", state.agent_id)


def decide(state: AgentState, cmd, facts: Facts = {}) -> list[Event]:  # noqa: B006 - agents need none
    match cmd:
        case CreateAgent(project=project, at=at, settings=settings):
            if state.version != 0:
                return []
            return [AgentCreated(agent_id=state.agent_id, project=project, created_at=at,
                                 **msgspec.structs.asdict(settings))]
        case UpdateAgent(project=project, changes=changes):
            _require(state, project)
            return [AgentUpdated(agent_id=state.agent_id, **changes)]
        case DeleteAgent(project=project):
            _require(state, project)
            return [AgentDeleted(agent_id=state.agent_id)]
    raise TypeError(f"unknown command {cmd!r}")


evolve = created_then_deleted(AgentCreated, AgentDeleted)


DECIDER = Decider("agent", AgentState, decide, evolve, terminal=lambda state: state.deleted)
