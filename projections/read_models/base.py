"""What a read model declares about itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReadModel:
    table: str
    lock_rank: int                      # its place in the rebuild switch's lock order (read_models.lock_order)
    deleted_with: str | None = None     # the table whose row's delete takes this one's rows with it
    rebuilt: bool = True                # made afresh from the log by `threadline projections rebuild`
