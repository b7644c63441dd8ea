"""The run engine: executes runs in the background, keeps their leases, and sweeps for runs that
need attention — expired, or left behind by a process that died.

Recovery policy. A run whose lease lapsed was being executed by a process that is gone. If it was
`queued`, it simply runs here. If it was `in_progress`, the turn the dead process was in is redone
from the last committed state: the thread's messages and every tool output submitted so far are in
the log, so asking the model again from there is a retry of one model call. The partial reply of
the interrupted turn is deleted (the log keeps it for audit) so the thread ends with one answer.
A run interrupted more than `MAX_REQUEUES` times fails with `server_error` instead of looping.
A run that was `cancelling` becomes `cancelled`. On shutdown the same requeue hands the runs still
executing after the grace period to another process.
"""

from __future__ import annotations

import asyncio
import os

import structlog

from service.domain import run as runs
from service.ids import now
from service.runs import leases
from service.runs.execution import META, Deps, Execution

log = structlog.get_logger("threadline.runs")


class RunEngine:
    def __init__(self, deps: Deps):
        self.deps = deps
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self.lease_seconds = deps.config.run_lease_seconds
        self._tasks: dict[str, asyncio.Task] = {}
        self._threads: dict[str, str] = {}
        self._interrupts: dict[str, str] = {}
        self._again: set[str] = set()       # submitted while their last execution was still ending
        self._closing = False
        self._loops = [asyncio.create_task(self._expire_loop()), asyncio.create_task(self._lease_loop())]

    def __len__(self) -> int:
        return len(self._tasks)

    def submit(self, thread_id: str, run_id: str) -> None:
        """Execute the run here (if no other process holds it); returns at once."""
        if self._closing:
            return
        if run_id in self._tasks:
            # Its last execution may be ending (releasing its lease) while the run was queued again,
            # say by tool outputs sent at once: run it again after that, or it would wait for adoption.
            self._again.add(run_id)
            return
        self._threads[run_id] = thread_id
        self._tasks[run_id] = asyncio.create_task(self._execute(thread_id, run_id), name=f"run:{run_id}")

    def interrupt(self, run_id: str, reason: str) -> bool:
        """Stop executing a run (cancelled, expired, shutting down); its execution ends it properly.
        False when this process is not executing it."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            return False
        self._interrupts[run_id] = reason
        task.cancel()
        return True

    async def _execute(self, thread_id: str, run_id: str) -> None:
        db = self.deps.db
        try:
            if not await leases.claim(db, run_id, thread_id, self.owner, self.lease_seconds):
                return      # another process has it
            execution = Execution(self.deps, thread_id, run_id)
            try:
                await execution.run()
            except asyncio.CancelledError:
                reason = self._interrupts.pop(run_id, "shutdown")
                if reason == "shutdown":
                    await execution.finish(runs.RequeueRun(run_id, now(), "the service shut down"))
                elif reason == "expired":     # only this process knows the text streamed so far
                    await execution.finish(runs.ExpireRun(run_id, now(), content=execution.partial_content()))
                else:   # cancelled or expired: the domain turns this into the right ending
                    await execution.finish(runs.FinishRun(run_id, now(), "failed", execution.total_usage(),
                                                          content=execution.partial_content()))
            finally:
                await asyncio.shield(leases.release(db, run_id, self.owner))
        except Exception:  # noqa: BLE001 - the sweeper will find the run again
            log.exception("run_execution_error", run_id=run_id, thread_id=thread_id)
        finally:
            self._tasks.pop(run_id, None)
            self._threads.pop(run_id, None)
            self._interrupts.pop(run_id, None)
            if run_id in self._again:
                self._again.discard(run_id)
                self.submit(thread_id, run_id)      # a run that is not queued decides nothing and ends

    # -- sweeping -------------------------------------------------------------------------------

    async def _expire_loop(self) -> None:
        """Runs past expires_at end `expired` within a sweep interval, whatever state they are in."""
        while True:
            await asyncio.sleep(self.deps.config.run_sweep_seconds)
            try:
                for run_id, thread_id in await leases.expired_runs(self.deps.db, now(), self.owner):
                    if not self.interrupt(run_id, "expired"):
                        await self.deps.actors.ask(thread_id, runs.ExpireRun(run_id, now()), META)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a database outage must not end the sweeper
                log.warning("expiry_sweep_failed", exc_info=True)

    async def _lease_loop(self) -> None:
        """Renew our leases (and notice runs cancelled through another process); adopt orphans;
        clear leases left on runs that ended."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._renew()
                if not self._closing:
                    await self._adopt_orphans()
                    await leases.forget_ended(self.deps.db)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                log.warning("lease_sweep_failed", exc_info=True)

    async def _renew(self) -> None:
        if not self._tasks:
            return
        statuses = await leases.renew(self.deps.db, self.owner, list(self._tasks), self.lease_seconds)
        for run_id, status in statuses.items():
            if status is None or status not in leases.ACTIVE:
                self.interrupt(run_id, "ended elsewhere")
            elif status == "cancelling":
                self.interrupt(run_id, "cancelled")

    async def _adopt_orphans(self) -> None:
        for run_id, thread_id, status in await leases.orphans(self.deps.db, self.lease_seconds):
            if run_id in self._tasks:
                continue
            # Claim it before redoing its turn: every process of a cluster sees the same orphan, and
            # only the one holding the lease may requeue it (a second requeue would cancel the redo).
            if not await leases.claim(self.deps.db, run_id, thread_id, self.owner, self.lease_seconds):
                continue
            if status != "queued":
                await self.deps.actors.ask(thread_id, runs.RequeueRun(run_id, now(), "its process stopped"), META)
            log.info("run_adopted", run_id=run_id, thread_id=thread_id, status=status)
            self.submit(thread_id, run_id)

    # -- stopping -------------------------------------------------------------------------------

    async def close(self, grace: float | None = None) -> None:
        """Take no new runs; let running ones finish for `grace` seconds; hand the rest back."""
        self._closing = True
        grace = self.deps.config.shutdown_grace_seconds if grace is None else grace
        tasks = list(self._tasks.values())
        if tasks:
            log.info("runs_draining", running=len(tasks), grace_seconds=grace)
            await asyncio.wait(tasks, timeout=grace)
        for run_id in list(self._tasks):
            self.interrupt(run_id, "shutdown")
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
