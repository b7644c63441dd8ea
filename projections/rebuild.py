"""Rebuild every read model from the log into fresh tables, then switch to them atomically.

    threadline projections rebuild

(Over 400 lines on purpose: a quarter of it is this account of why the switch loses nothing, and
the rest is one procedure whose phases share one state; split, a reader would lose the thread.)

1. **Fresh tables.** A new schema `threadline_rebuild_<hex>` gets a copy of each read-model table
   (columns, defaults and checks via `LIKE … INCLUDING ALL`; primary keys, unique and partial
   indexes re-created from their definitions under their own names, so after the switch every
   index is named as the migrations named it). The tables are those the read models declare
   rebuilt (projections/read_models/); file bytes are not a read model and are never touched.
2. **Bulk load.** One connection reads the log with the gap-safe reader (`read_all`: (xid,
   position) order, only transactions older than the oldest one still running), decodes and runs
   the pure projector (`read_model_changes`) a batch ahead, while a second connection whose
   `search_path` is *only* the new schema applies each batch with one
   `public.apply_read_models($1)` call. Unqualified table names in that function resolve to the new
   tables; a table the rebuild did not copy fails loudly ("relation does not exist") instead of
   falling through to the live one.
3. **Switch**, in one transaction: `LOCK TABLE` every live read-model table in ACCESS EXCLUSIVE
   mode (each attempt bounded well under deadlock_timeout, retried), apply the events committed
   since the last checkpoint, move the live tables out to `threadline_retired_<hex>` and the new
   ones into `public`, COMMIT; then drop the old tables, one per transaction (see
   `_Rebuild._drop_retired`) and VACUUM the new ones.
   The service keeps answering: reads and appends that need a read-model table wait for the few
   milliseconds the switch holds the locks, then run against the new tables (see "Why the switch
   loses nothing" below).

Why the switch loses nothing
----------------------------
An append is one statement that runs `apply_read_models` (so it locks every read-model table it
writes) and then `append_events`; an upload does the same at the end of its transaction. Every
event that changes a read model is therefore written by a transaction that holds a lock on a
read-model table from before its events exist until it commits. Once the switch holds ACCESS
EXCLUSIVE on all of them:

- no transaction that wrote read-model changes is still running (it would hold a conflicting lock),
  so every such event is either committed, hence visible to the switch's next statement, or will
  be written by a transaction that is now waiting for the lock and has written nothing yet;
- the switch therefore reads *every visible* event after its checkpoint. It must not use the
  gap-safe filter here: a transaction blocked on the lock (an upload has an xid since its first
  chunk) holds the xmin horizon back, and the gap-safe reader would wait for it forever while it
  waits for us. Events of transactions still running that changed no read model (text deltas) may
  commit later behind the checkpoint; they have nothing to apply;
- a waiting append resumes after COMMIT: Postgres accepts the invalidation messages of the
  `ALTER TABLE … SET SCHEMA` when its lock is granted, so its cached plans (plpgsql's in
  `apply_read_models`, asyncpg's prepared statements) are re-planned and `messages` now resolves to
  the new table; the same holds for every later statement in every session.

Per stream the order of application is the order of writing: a later version can only be
written after the earlier one committed (UNIQUE(stream, version) and append_events' gap check),
by a statement that gets its xid only then, so it has a later xid (the one longer transaction, an
upload, begins a new stream). Every read-model change depends only on rows of its own stream, so
applying in (xid, position) order gives exactly the rows the live appends wrote in commit order.

The rebuild refuses tables it cannot copy faithfully (triggers, views or foreign keys depending on
them, row-level security), and aborts if a migration ran while it was rebuilding.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import msgspec

from events import cipher
from events.store import _COLUMNS, Checkpoint, RecordedEvent, _rows_to_events
from projections import read_models
from projections.projector import NO_CHANGE_TYPES, read_model_changes

# The tables apply_read_models writes, as the read models declare them.
READ_MODEL_TABLES = read_models.rebuilt()
# The switch locks the live tables in the order one change's statement locks them (read_models.lock_order).
_LOCK_ORDER = read_models.lock_order()
# Events of the types in NO_CHANGE_TYPES are read, to move the checkpoint, but not decoded (nor decrypted).

# The gap-safe catch-up read, exactly as EventStore.read_all reads.
_READ_GAP_SAFE = f"SELECT {_COLUMNS}, xid::text::bigint FROM public.read_all($1::text::xid8, $2, $3)"
# Every event committed after the checkpoint, gap-safe filter off: only correct while the
# read-model tables are locked (see "Why the switch loses nothing").
_READ_VISIBLE = (f"SELECT {_COLUMNS}, xid::text::bigint FROM public.events "
                 "WHERE (xid, position) > ($1::text::xid8, $2) ORDER BY xid, position LIMIT $3")
_COUNT_VISIBLE = ("SELECT count(*) FROM (SELECT 1 FROM public.events "
                  "WHERE (xid, position) > ($1::text::xid8, $2) LIMIT $3) AS pending")
_APPLY = "SELECT public.apply_read_models($1::json)"
_REBUILD_LOCK = 7_246_120_002   # advisory lock held by the rebuild's session: one rebuild at a time
_MIGRATIONS = "SELECT count(*)::text || ' ' || coalesce(max(name), '') FROM public.schema_migrations"

_encoder = msgspec.json.Encoder()


class RebuildError(Exception):
    """The rebuild could not finish; the live tables are untouched."""


@dataclass
class Progress:
    phase: str          # "load", "catch-up", "switch", "done"
    events: int         # events read from the log so far
    changes: int        # read-model changes applied so far
    seconds: float      # since the start of the load

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass
class RebuildResult:
    events: int
    changes: int
    seconds: float                  # the whole rebuild, tables created to old tables dropped
    load_seconds: float             # reading and applying the log, before the switch
    switch_ms: float                # how long the live tables were locked
    switch_events: int              # events applied while they were locked
    lock_attempts: int
    rows: dict[str, int] = field(default_factory=dict)
    leftover_schema: str | None = None   # old tables that could not be dropped yet: DROP SCHEMA … CASCADE later

    @property
    def rate(self) -> float:
        return self.events / self.load_seconds if self.load_seconds > 0 else 0.0


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _changes_json(events: list[RecordedEvent]) -> tuple[bytes, int]:
    changes = read_model_changes([e.event for e in events], [e.version for e in events])
    return _encoder.encode(changes), len(changes)


async def _read(conn: asyncpg.Connection | asyncpg.Pool, keys_db: asyncpg.Connection | asyncpg.Pool,
                after: Checkpoint, limit: int, *, gap_safe: bool) -> tuple[bytes, int, int, Checkpoint] | None:
    """The next batch after the checkpoint as (changes JSON, changes, events read, checkpoint);
    None at the head. Rows are decoded as the store decodes them (thread content decrypted with
    keys read through `keys_db`, cached for this batch only)."""
    rows = await conn.fetch(_READ_GAP_SAFE if gap_safe else _READ_VISIBLE, str(after.xid), after.position, limit)
    if not rows:
        return None
    events = await _rows_to_events(keys_db, cipher.KeyRing(), [r for r in rows if r[3] not in NO_CHANGE_TYPES])
    changes, count = _changes_json(events)
    return changes, count, len(rows), Checkpoint(rows[-1][7], rows[-1][0])


async def _check_supported(conn: asyncpg.Connection, tables: tuple[str, ...]) -> None:
    """Refuse what `LIKE … INCLUDING ALL` plus re-created indexes would not carry over."""
    problems = await conn.fetch(
        """SELECT c.relname, 'trigger ' || t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) AND NOT t.tgisinternal
           UNION ALL
           SELECT c.relname, 'foreign key ' || k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) AND k.contype = 'f'
           UNION ALL
           SELECT c.relname, 'foreign key ' || k.conname FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) AND k.contype = 'f'
           UNION ALL
           SELECT DISTINCT c.relname, 'view ' || v.oid::regclass::text FROM pg_depend d
           JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
           JOIN pg_class v ON v.oid = r.ev_class
           JOIN pg_class c ON c.oid = d.refobjid
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) AND v.oid <> c.oid
           UNION ALL
           SELECT c.relname, 'row-level security' FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY($1) AND c.relrowsecurity""",
        list(tables))
    if problems:
        raise RebuildError("cannot rebuild into copies of tables with " +
                           ", ".join(f"{t}: {what}" for t, what in problems))
    missing = set(tables) - {r[0] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relkind = 'r' "
        "AND relname = ANY($1)", list(tables))}
    if missing:
        raise RebuildError(f"missing tables {sorted(missing)}: run `threadline migrate` first")


async def _copy_table(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    """An empty table shaped exactly like public.<table>: columns, defaults, checks, storage,
    indexes and constraints under their original names, owner and grants. Returns the live
    table's storage options (reloptions), for the caller to set once loading is over."""
    live, new = f"public.{_q(table)}", f"{_q(schema)}.{_q(table)}"
    await conn.execute(f"CREATE TABLE {new} (LIKE {live} INCLUDING ALL EXCLUDING INDEXES)")
    # Constraints backed by an index (primary key, unique, exclusion) keep their names.
    for name, definition in await conn.fetch(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname", live):
        await conn.execute(f"ALTER TABLE {new} ADD CONSTRAINT {_q(name)} {definition}")
    # Every other index from its own definition, retargeted at the new table.
    for (definition,) in await conn.fetch(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = $1::regclass "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) "
            "ORDER BY i.indexrelid", live):
        target = f" ON public.{table} USING "
        if definition.count(target) != 1:
            raise RebuildError(f"cannot retarget index definition: {definition}")
        await conn.execute(definition.replace(target, f" ON {new} USING "))
    owner, options, acl = await conn.fetchrow(
        "SELECT pg_get_userbyid(relowner), reloptions, "
        "(SELECT array_agg(format('GRANT %s ON %s TO %s', a.privilege_type, '{}', "
        "        CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)) "
        " FROM aclexplode(relacl) a WHERE a.grantee <> relowner) "
        "FROM pg_class WHERE oid = $1::regclass", live)
    for grant in acl or ():
        await conn.execute(grant.replace("{}", new))
    if owner != await conn.fetchval("SELECT current_user"):
        await conn.execute(f"ALTER TABLE {new} OWNER TO {_q(owner)}")
    return list(options or ())


class _Rebuild:
    def __init__(self, url: str, batch_size: int, progress: Callable[[Progress], None] | None,
                 lock_wait_ms: int | None, switch_seconds: float, max_locked_backlog: int):
        self.url = url
        self.batch_size = batch_size
        self.on_progress = progress
        self.lock_wait_ms = lock_wait_ms
        self.switch_seconds = switch_seconds
        self.max_locked_backlog = max_locked_backlog
        tag = secrets.token_hex(4)
        self.schema = f"threadline_rebuild_{tag}"
        self.retired = f"threadline_retired_{tag}"
        self.tables = READ_MODEL_TABLES
        self.options: dict[str, list[str]] = {}   # the live tables' storage options, set after the switch
        self.events = self.changes = 0
        self.started = 0.0
        self.phase = "load"

    def _report(self) -> None:
        if self.on_progress is not None:
            self.on_progress(Progress(self.phase, self.events, self.changes, time.perf_counter() - self.started))

    async def _apply(self, conn: asyncpg.Connection, changes: bytes, count: int) -> None:
        try:
            await conn.fetchval(_APPLY, changes.decode())
        except asyncpg.UndefinedTableError as exc:
            raise RebuildError(f"apply_read_models writes a table the rebuild does not copy ({exc}); "
                               "declare it in projections/read_models/") from exc
        self.changes += count

    async def _catch_up(self, reader: asyncpg.Pool, writer: asyncpg.Connection, checkpoint: Checkpoint) -> Checkpoint:
        """Read gap-safe from the checkpoint to the head, applying as we go; the next batch is
        read, decoded and projected while the previous one is applied."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=2)

        async def read() -> None:
            after = checkpoint
            while (batch := await _read(reader, reader, after, self.batch_size, gap_safe=True)) is not None:
                after = batch[3]
                await queue.put(batch)
            await queue.put(None)

        reading = asyncio.create_task(read())
        last_report = time.perf_counter()
        try:
            while (batch := await queue.get()) is not None:
                changes, count, n, checkpoint = batch
                await self._apply(writer, changes, count)
                self.events += n
                if time.perf_counter() - last_report >= 1.0:
                    last_report = time.perf_counter()
                    self._report()
            await reading
        finally:
            if not reading.done():
                reading.cancel()
                await asyncio.gather(reading, return_exceptions=True)
        return checkpoint

    async def _backlog(self, conn: asyncpg.Connection, checkpoint: Checkpoint) -> int:
        """Committed events the gap-safe reader cannot reach yet (a long transaction holds it back)."""
        return await conn.fetchval(_COUNT_VISIBLE, str(checkpoint.xid), checkpoint.position,
                                   self.max_locked_backlog + 1)

    async def _switch(self, writer: asyncpg.Connection, reader: asyncpg.Pool, checkpoint: Checkpoint,
                      migrations: str) -> tuple[float, int]:
        """Lock, apply what committed since the checkpoint, swap the tables: one transaction.

        Taking the locks is bounded by `lock_wait_ms` as a whole (statement_timeout) and per lock
        (lock_timeout), well under deadlock_timeout: if the switch and an append ever wait for
        each other (an append locks its tables one change at a time, in no fixed order), the
        switch gives up first and retries, so Postgres never has to abort the append. Once every
        lock is held nothing can wait for the switch in a cycle."""
        ours = [f"{_q(self.schema)}.{_q(t)}" for t in READ_MODEL_TABLES]
        live = [f"public.{_q(t)}" for t in _LOCK_ORDER]
        async with writer.transaction():
            await writer.execute(f"SET LOCAL lock_timeout = '{self.lock_wait_ms}ms'; "
                                 f"SET LOCAL statement_timeout = '{self.lock_wait_ms}ms'; "
                                 "SET LOCAL synchronous_commit = on")
            await writer.execute(f"LOCK TABLE {', '.join(ours + live)} IN ACCESS EXCLUSIVE MODE")
            locked = time.perf_counter()
            await writer.execute("SET LOCAL statement_timeout = 0")
            if await writer.fetchval(_MIGRATIONS) != migrations:
                raise RebuildError("a migration ran during the rebuild; run it again")
            applied = 0
            # Thread keys are read through the reader's pool: this session's search_path is the new schema.
            while (batch := await _read(writer, reader, checkpoint, self.batch_size, gap_safe=False)) is not None:
                changes, count, n, checkpoint = batch
                await self._apply(writer, changes, count)
                applied += n
                self.events += n
            for t in READ_MODEL_TABLES:   # the live table's storage options, autovacuum back on
                await writer.execute(f"ALTER TABLE {_q(self.schema)}.{_q(t)} RESET (autovacuum_enabled)")
                if self.options.get(t):
                    await writer.execute(f"ALTER TABLE {_q(self.schema)}.{_q(t)} SET ({', '.join(self.options[t])})")
            for t in READ_MODEL_TABLES:
                await writer.execute(f"ALTER TABLE public.{_q(t)} SET SCHEMA {_q(self.retired)}")
            for t in READ_MODEL_TABLES:
                await writer.execute(f"ALTER TABLE {_q(self.schema)}.{_q(t)} SET SCHEMA public")
        return (time.perf_counter() - locked) * 1000, applied

    async def _drop_retired(self, conn: asyncpg.Connection) -> str | None:
        """Drop the old tables one per transaction, then their schema; the schema's name if some
        table could not be dropped within half a minute (the rebuild is done either way).

        Sessions that were waiting for the switch lock the old tables once more (the relations
        their cached plans name) before they notice the invalidation, re-plan and let go. A DROP
        SCHEMA … CASCADE would lock table after table and could deadlock with such a session
        holding one old table and reaching for the next; one table per transaction holds nothing
        while it waits, so it cannot."""
        deadline = time.monotonic() + 30
        for t in READ_MODEL_TABLES:
            while True:
                try:
                    async with conn.transaction():
                        await conn.execute(f"SET LOCAL lock_timeout = '{self.lock_wait_ms}ms'")
                        await conn.execute(f"DROP TABLE {_q(self.retired)}.{_q(t)}")
                    break
                except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
                    if time.monotonic() > deadline:
                        return self.retired
                    await asyncio.sleep(0.05)
        await conn.execute(f"DROP SCHEMA {_q(self.retired)}")
        return None

    async def run(self) -> RebuildResult:
        t0 = time.perf_counter()
        writer = await asyncpg.connect(self.url, server_settings={"application_name": "threadline-rebuild"})
        pool = await asyncpg.create_pool(self.url, min_size=1, max_size=2,
                                         server_settings={"application_name": "threadline-rebuild-reader"})
        created = False
        try:
            if not await writer.fetchval("SELECT pg_try_advisory_lock($1)", _REBUILD_LOCK):
                raise RebuildError("another rebuild is running")
            await _check_supported(writer, self.tables)
            migrations = await writer.fetchval(_MIGRATIONS)
            if self.lock_wait_ms is None:
                deadlock_ms = await writer.fetchval(
                    "SELECT setting::int FROM pg_settings WHERE name = 'deadlock_timeout'")
                self.lock_wait_ms = max(1, min(200, deadlock_ms // 4))
            async with writer.transaction():
                await writer.execute(f"CREATE SCHEMA {_q(self.schema)}; CREATE SCHEMA {_q(self.retired)}")
                for t in self.tables:
                    self.options[t] = await _copy_table(writer, self.schema, t)
                    # No autovacuum while loading (ANALYZE and VACUUM are run here): it would only
                    # compete for the tables, and the switch would have to wait for it.
                    await writer.execute(f"ALTER TABLE {_q(self.schema)}.{_q(t)} SET (autovacuum_enabled = false)")
            created = True
            # From here on this session sees only the new tables (and pg_catalog); the rebuild
            # tables are scratch until the switch, so their commits need not wait for the disk.
            await writer.execute(f"SET search_path = {_q(self.schema)}; SET synchronous_commit = off")

            self.started = time.perf_counter()
            checkpoint = await self._catch_up(pool, writer, Checkpoint())
            self.phase = "catch-up"
            self._report()
            await writer.execute(f"ANALYZE {', '.join(f'{_q(self.schema)}.{_q(t)}' for t in READ_MODEL_TABLES)}")
            checkpoint = await self._catch_up(pool, writer, checkpoint)
            load_seconds = time.perf_counter() - self.started

            self.phase = "switch"
            self._report()
            attempts, waited_for_backlog = 0, 0.0
            deadline = time.monotonic() + self.switch_seconds
            while True:
                checkpoint = await self._catch_up(pool, writer, checkpoint)
                if await self._backlog(writer, checkpoint) > self.max_locked_backlog and waited_for_backlog < 60:
                    # A long transaction (an upload in progress) holds the gap-safe reader back;
                    # wait for it rather than apply a large backlog while the tables are locked.
                    await asyncio.sleep(0.5)
                    waited_for_backlog += 0.5
                    continue
                attempts += 1
                try:
                    switch_ms, switch_events = await self._switch(writer, pool, checkpoint, migrations)
                    break
                except (asyncpg.LockNotAvailableError, asyncpg.QueryCanceledError, asyncpg.DeadlockDetectedError):
                    if time.monotonic() > deadline:
                        raise RebuildError(f"could not lock the read-model tables in {attempts} attempts of "
                                           f"{self.lock_wait_ms} ms over {self.switch_seconds:g} s; "
                                           "is a long transaction holding them?") from None
                    # Let the requests that queued behind the attempt through, then try again.
                    await asyncio.sleep(random.uniform(0.005, 0.02) * min(attempts, 10))
            created = False   # the new tables are live now: dropping the old ones is all that is left
            self.phase = "done"
            self._report()
            await writer.execute("RESET search_path")
            await writer.execute(f"DROP SCHEMA {_q(self.schema)} CASCADE")   # empty now
            leftover = await self._drop_retired(writer)
            # Live now: VACUUM (readers and writers go on) sets the visibility map for index-only
            # scans and clears the dead versions the load's merges left behind.
            await writer.execute(f"VACUUM {', '.join(f'public.{_q(t)}' for t in READ_MODEL_TABLES)}")
            rows = {t: await writer.fetchval(f"SELECT count(*) FROM public.{_q(t)}") for t in READ_MODEL_TABLES}
            return RebuildResult(self.events, self.changes, time.perf_counter() - t0, load_seconds,
                                 switch_ms, switch_events, attempts, rows, leftover)
        finally:
            if created:   # failed before the switch: the live tables were never touched
                try:
                    await writer.execute("RESET search_path")
                    await writer.execute(f"DROP SCHEMA IF EXISTS {_q(self.schema)} CASCADE; "
                                         f"DROP SCHEMA IF EXISTS {_q(self.retired)} CASCADE")
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                    pass
            await pool.close()
            await writer.close()


async def rebuild(url: str, *, batch_size: int = 10_000, progress: Callable[[Progress], None] | None = None,
                  lock_wait_ms: int | None = None, switch_seconds: float = 120.0,
                  max_locked_backlog: int = 5_000) -> RebuildResult:
    """Rebuild every read model from the log and switch to the new tables atomically.

    `progress` is called about once a second and at each phase change. The live tables are
    locked only for the switch. Each attempt to lock them waits at most `lock_wait_ms` (default:
    a quarter of deadlock_timeout, at most 200 ms); attempts are retried for `switch_seconds`,
    then the rebuild gives up (RebuildError) and the live tables stay as they were. The switch
    waits (up to a minute) until at most `max_locked_backlog` committed events are left for it
    to apply under the lock."""
    return await _Rebuild(url, batch_size, progress, lock_wait_ms, switch_seconds, max_locked_backlog).run()


async def rebuild_from_cli(url: str, batch_size: int = 10_000) -> int:
    """`threadline projections rebuild`: progress on stderr about once a second, a summary on
    stdout; the exit status."""
    last = [time.perf_counter(), 0]

    def show(p: Progress) -> None:
        now = time.perf_counter()
        recent = (p.events - last[1]) / max(now - last[0], 1e-6)
        last[:] = [now, p.events]
        print(f"rebuild: {p.phase:<8} {p.events:>13,} events {recent:>10,.0f} events/s "
              f"({p.rate:,.0f}/s overall, {p.seconds:.1f} s)", file=sys.stderr, flush=True)

    try:
        r = await rebuild(url, batch_size=batch_size, progress=show)
    except RebuildError as exc:
        print(f"rebuild failed; the live read models are unchanged: {exc}", file=sys.stderr)
        return 1
    print(f"rebuilt {r.events:,} events ({r.changes:,} read-model changes) in {r.seconds:.1f} s, "
          f"{r.rate:,.0f} events/s; the switch locked the read models for {r.switch_ms:.0f} ms "
          f"({r.switch_events:,} events applied meanwhile; locked at attempt {r.lock_attempts})")
    print("rows: " + ", ".join(f"{t} {n:,}" for t, n in r.rows.items()))
    if r.leftover_schema:
        print(f"note: the old tables are still in schema {r.leftover_schema} (something kept them busy); "
              f"drop them later with: DROP SCHEMA {_q(r.leftover_schema)} CASCADE", file=sys.stderr)
    return 0
