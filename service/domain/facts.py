"""What a decider may need to know beyond the state it folds: facts the read side holds (whether one
message exists; a past run's status). A decider declares the facts a command needs (`needs`), the
actor looks them up, and `decide` gets them as a mapping: commands carry only what the caller wants."""

from __future__ import annotations

from typing import Any, Mapping

import msgspec


class MessageExists(msgspec.Struct, frozen=True):
    """Whether the thread has this message (bool)."""
    message_id: str


class RunStatus(msgspec.Struct, frozen=True):
    """This run's status in the read model, or None when the thread has no such run."""
    run_id: str


Facts = Mapping[MessageExists | RunStatus, Any]
