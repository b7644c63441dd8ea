"""File bytes (table blob_chunks) are not a read model: they are written with their FileUploaded
event and go in the statement that appends their FileDeleted, so no deleted file's bytes outlive
it and a rebuild of the read models never touches them."""

from __future__ import annotations

from typing import Sequence

import msgspec

from events.store import Projection
from events.types import Event, FileDeleted

_encoder = msgspec.json.Encoder()


def _deleted(events: Sequence[Event], _versions: Sequence[int]) -> str | None:
    deleted = [e.file_id for e in events if isinstance(e, FileDeleted)]
    return _encoder.encode(deleted).decode() if deleted else None


BLOB_DELETIONS = Projection("delete_blobs", _deleted)
