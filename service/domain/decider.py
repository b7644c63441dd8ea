"""An entity's pure logic as one record, as Akka Persistence typed has it: its state type (whose
`State(id)` is the state before any event), decide, evolve, the read-side facts a command needs and
whether a state is final. The shell (service/actors.py) runs every entity through it: threads in
their actors, agents and files one command at a time. A new entity is a module with its state, its
commands, decide and evolve, and one `Decider(...)` line."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

import msgspec

from events.types import Event
from service.domain.facts import Facts

S = TypeVar("S")


def _no_facts(state: Any, cmd: Any) -> tuple:
    return ()


def _never(state: Any) -> bool:
    return False


@dataclass(frozen=True)
class Decider(Generic[S]):
    category: str                                       # its streams are "<category>-<id>"
    state_type: type[S]
    decide: Callable[[S, Any, Facts], list[Event]]
    evolve: Callable[[S, Event], S]
    needs: Callable[[S, Any], tuple] = _no_facts        # the facts `decide` needs for a command
    terminal: Callable[[S], bool] = _never              # nothing more can happen (deleted)
    snapshots: bool = False                             # long streams: keep snapshots of the state
    snapshot_schema: int = field(init=False)

    def __post_init__(self) -> None:
        # Derived from the state type's shape (field names, types, which are required): a changed
        # state ignores older snapshots, with no constant to remember to bump.
        shape = repr(_shape(msgspec.inspect.type_info(self.state_type), set()))
        object.__setattr__(self, "snapshot_schema", zlib.crc32(shape.encode()) & 0x7FFFFFFF)

    def initial(self, entity_id: str) -> S:
        return self.state_type(entity_id)

    def stream(self, entity_id: str) -> str:
        return f"{self.category}-{entity_id}"


def _shape(info: Any, seen: set) -> Any:
    """A type's shape with no names of classes or docstrings in it."""
    inspect = msgspec.inspect
    if isinstance(info, inspect.Metadata):
        return _shape(info.type, seen)
    if isinstance(info, inspect.StructType):
        if info.cls in seen:
            return "recursive"
        seen = seen | {info.cls}
        return ("struct", tuple((f.encode_name, f.required, _shape(f.type, seen)) for f in info.fields))
    if isinstance(info, inspect.DictType):
        return ("dict", _shape(info.key_type, seen), _shape(info.value_type, seen))
    if isinstance(info, (inspect.ListType, inspect.SetType, inspect.FrozenSetType, inspect.VarTupleType)):
        return (type(info).__name__, _shape(info.item_type, seen))
    if isinstance(info, inspect.UnionType):
        return ("union", tuple(_shape(t, seen) for t in info.types))
    if isinstance(info, inspect.LiteralType):
        return ("literal", tuple(info.values))
    return type(info).__name__


def created_then_deleted(created: type[Event], deleted: type[Event]) -> Callable[[Any, Event], Any]:
    """The evolve of an entity that is created once, in a project, and deleted once (agents, files,
    vector stores): its state's `project`, `deleted` and `version`."""
    def evolve(state: Any, event: Event) -> Any:
        if isinstance(event, created):
            return msgspec.structs.replace(state, project=event.project, version=state.version + 1)
        if isinstance(event, deleted):
            return msgspec.structs.replace(state, deleted=True, version=state.version + 1)
        return msgspec.structs.replace(state, version=state.version + 1)
    return evolve
