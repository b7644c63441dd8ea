"""A file: uploaded once, deleted once. Its stream is `file-<id>`; the bytes live beside the log."""

from __future__ import annotations

import msgspec

from events.types import Event, FileDeleted, FileUploaded
from service.domain.decider import Decider, created_then_deleted
from service.domain.errors import NotFound
from service.domain.facts import Facts


class FileState(msgspec.Struct):
    file_id: str
    version: int = 0
    project: str | None = None
    deleted: bool = False


class UploadFile(msgspec.Struct, frozen=True, kw_only=True):
    project: str
    at: int
    filename: str
    purpose: str
    bytes: int
    sha256: str
    lifetime: int | None = None     # seconds from `expires_after`: the file is deleted then


class DeleteFile(msgspec.Struct, frozen=True):
    project: str


def decide(state: FileState, cmd, facts: Facts = {}) -> list[Event]:  # noqa: B006 - files need none
    match cmd:
        case UploadFile(at=at, lifetime=lifetime):
            if state.version != 0:
                return []
            return [FileUploaded(file_id=state.file_id, project=cmd.project, created_at=at, filename=cmd.filename,
                                 purpose=cmd.purpose, bytes=cmd.bytes, sha256=cmd.sha256,
                                 expires_at=None if lifetime is None else at + lifetime)]
        case DeleteFile(project=project):
            if state.project != project or state.deleted:
                raise NotFound("file", state.file_id)
            return [FileDeleted(file_id=state.file_id)]
    raise TypeError(f"unknown command {cmd!r}")


evolve = created_then_deleted(FileUploaded, FileDeleted)


DECIDER = Decider("file", FileState, decide, evolve, terminal=lambda state: state.deleted)
