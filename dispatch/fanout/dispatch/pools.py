"""Pools of reusable workers: the dispatcher's side of actions whose spec has a ReusePolicy.

A pool serves one tenant's environment (with one image, workdir, env and code bundle):
it starts workers on demand up to `replicas`, sends each action to the
least-loaded worker with a free slot (at most `concurrency` per worker),
queues the rest here, stops a worker idle for `idle_ttl` seconds, and
starts another in place of one that died. Demand is also a busy worker: one
that has not answered the work sent to it for BUSY_SECONDS is in a long turn
of its event loop (a parent's gather running thousands of first steps, or a
task that blocks), so new work goes to another worker, started if need be. A
parent that the control plane says waits on its children gives its slot back
(it is an idle coroutine in the worker), so a nested fanout in one
environment cannot fill its own pool and deadlock.

An action counts as started once it is sent to a worker (the admission-to-start
metric), but RUNNING only once the worker says it still runs after its first
step: a no-op, done in that step, goes straight to its end, which saves the
hot path of a big fanout a report, a script's work and a watch event per
action. A worker of an earlier release does not say (its `ready` lacks
tells_running): its actions are RUNNING once sent, as they were. Nor can a
worker whose task blocks its event loop in its first step (CPU-bound code
with no await): an action unheard of for UNTOLD_RUNNING_SECONDS is reported
RUNNING anyway, since it is running.

A job ends by a call of its on_done, once: its outcome, or WorkerLost. It is
no asyncio task: the reusable path is a big fanout's hot path, and a task,
a future and their awaits per action cost the dispatcher about a fifth of
its time there. (run() is the coroutine form, for one-shot pools and tests.)

What a dead worker held is lost on purpose: its jobs end with WorkerLost, the
dispatcher drops those actions without a report and stops renewing their
leases, and the control plane leases them again once the leases lapse (at
most one lease period). The same holds when the dispatcher itself dies: a
worker's results live only in memory, so what it finished but had not yet
reported runs again. That is at-least-once, like any lost lease.

Timeouts run here: when an action's time is up the worker is told to
cancel it and answers TIMED_OUT; a worker that does not answer within
TIMEOUT_GRACE_SECONDS (a task blocking its event loop) is killed, the late
action reported TIMED_OUT and the others run again elsewhere.

Workers start with a clean environment: a few essentials (PATH, HOME,
locale, the Python path), the spec's env and the control plane's address.
Never the dispatcher's token, never FANOUT_REDIS_URL. They run in their
tenant's private home under the tenant's uid when the dispatcher is root
(sandbox.py), and under the memory limit of their environment's Resources
(a worker is one replica, as a container would be): a hard limit the worker
sets on itself before its first action (become_user.py), so tenant code
cannot lift it; past it an allocation raises MemoryError in the task, an
OOM failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout.config import ClientConfig
from fanout.dispatch import become_user
from fanout.dispatch.backend import Outcome, StartedCallback, failure
from fanout.dispatch.frames import frame, read_frame
from fanout.dispatch.sandbox import Sandbox
from fanout.dispatch.worker import ENV_CONCURRENCY
from fanout.dispatch.worker_env import tls_variables, worker_env
from fanout.server.parent_death import command_dying_with_parent
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import dispatch_pb2 as dpb
from fanout.v1 import worker_pb2 as wpb

log = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-m", "fanout.dispatch.worker")
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
TIMEOUT_GRACE_SECONDS = 5.0
# An action sent to a worker that has neither said it runs nor ended within this is RUNNING anyway.
UNTOLD_RUNNING_SECONDS = 1.0
# A worker that has answered nothing this long since work was sent to it is busy: its event loop
# is in one long turn and reads no frames. A parent gathering 10,000 children spends ~0.1 s in
# one; its worker's new children waited for that turn's end while the pool's other replica,
# or one started then, would run them at once.
BUSY_SECONDS = 0.02
# Outcomes of one worker frame handled per turn of the loop. A frame can hold thousands (all that
# ended in one turn of the worker), and each wakes its action's task in the next turn: handled all at
# once, they held a loop turn for tens of ms, and whatever came meanwhile (a small tenant's lease,
# its RUNNING notice) waited behind them.
OUTCOMES_PER_TURN = 64

Key = tuple[str, str, int]  # run, action name, attempt


class WorkerLost(RuntimeError):
    """The worker running the action died; the action's lease will lapse and it runs again."""


def reusable(spec: pb.ActionSpec) -> bool:
    """Whether the action runs in a pool: a Python task whose environment has a ReusePolicy."""
    return spec.HasField("reuse") and not spec.command


# How a job ends: its outcome, or WorkerLost (it runs again after its lease).
DoneCallback = Callable[[Outcome | WorkerLost], None]


@dataclass(eq=False)
class Job:
    """One action sent, or to be sent, to a pool's worker; cancel() takes it back, and on_done is not called."""

    action: dpb.LeasedAction
    key: Key
    pool: Pool
    on_started: StartedCallback
    on_done: DoneCallback
    # Called once the worker says the action still runs after its first step (see worker.py), then
    # cleared; None from the start: on_started says it, as the action is sent.
    on_running: StartedCallback | None = None
    sent_at: float = 0.0  # loop time
    worker: FramedWorker | None = None
    holds_slot: bool = False
    timer: asyncio.TimerHandle | None = None
    ended: bool = False

    def done(self) -> bool:
        return self.ended

    def cancel(self) -> None:
        """Aborted, leased elsewhere, or the dispatcher stops: take it back from wherever it is."""
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
        if self.worker is None:
            with contextlib.suppress(ValueError):
                self.pool._queue.remove(self)
        elif self.key in self.worker.jobs:  # still running there: its answer (ABORTED) is dropped
            self.worker.cancel(self.key, timed_out=False)


@dataclass(frozen=True)
class PoolKey:
    tenant: str
    environment: str
    image: str
    workdir: str
    env: tuple[tuple[str, str], ...]
    # The code bundle (digest and sys.path entries): runs with other code never share a worker,
    # whose imported modules would be the other run's.
    bundle: tuple[str, tuple[str, ...]]
    replicas: int
    concurrency: int
    idle_ttl: float
    memory: str

    @classmethod
    def of(cls, action: dpb.LeasedAction) -> PoolKey:
        s = action.spec
        return cls(
            action.tenant,
            s.environment,
            s.image,
            s.workdir,
            tuple(sorted(s.env.items())),
            (s.bundle.digest, tuple(s.bundle.paths)),
            max(s.reuse.replicas, 1),
            max(s.reuse.concurrency, 1),
            max(s.reuse.idle_ttl_seconds, 0.0),
            s.resources.memory,
        )

    @property
    def label(self) -> str:
        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:10]
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in self.environment)[:40]
        return f"{self.tenant}-{safe}-{digest}"


class FramedWorker:
    """One worker at the other end of a frame stream: the frames to and from it, and the jobs it runs.

    Subclasses say how it starts (start() ends with _connect() on its streams),
    how it is stopped or killed, and how its end is told (_wait_exit()).
    """

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.jobs: dict[Key, Job] = {}
        self.slots_used = 0
        self.log_slot = 0
        self.idle_timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.Task[None] | None = None
        self._outbox = wpb.ToWorker()
        self._flush_scheduled = False
        self.tells_running = False  # it names its running actions (an older worker does not)
        # When work went to it that it has not answered since (loop time); None: it answered all.
        self.unanswered_since: float | None = None

    @property
    def pid(self) -> int | None:
        """Its process id on this machine, if it is a local process."""
        return None

    @property
    def name(self) -> str:
        return str(self.pid)

    async def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def _wait_exit(self) -> tuple[int, Outcome | None]:
        """Its exit code once it ended, and the outcome of the actions it still ran if not "run them again"."""
        raise NotImplementedError

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Wait for its `ready` frame, then read its outcomes; raises RuntimeError if it never becomes ready."""
        ready = wpb.FromWorker.FromString(await asyncio.wait_for(read_frame(reader), START_TIMEOUT_SECONDS))
        if not ready.HasField("ready"):
            raise ValueError("the worker's first frame is not `ready`")
        self.tells_running = ready.ready.tells_running
        self._writer = writer
        self._reader = asyncio.create_task(self._read(reader))

    def send(self, job: Job, now: float) -> None:
        self.jobs[job.key] = job
        self._outbox.run.append(job.action)
        if self.unanswered_since is None:
            self.unanswered_since = now
        self._schedule_flush()

    def busy(self, now: float) -> bool:
        """Whether work sent to it has waited BUSY_SECONDS for any word from it (see BUSY_SECONDS).

        Never for a worker of an earlier release: it says nothing until an action ends.
        """
        unanswered = self.unanswered_since
        return unanswered is not None and self.tells_running and now - unanswered > BUSY_SECONDS

    def cancel(self, key: Key, timed_out: bool) -> None:
        self._outbox.cancel.append(wpb.WorkerCancel(run=key[0], name=key[1], attempt=key[2], timed_out=timed_out))
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Every action routed here in this turn of the loop goes out in one frame.
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        message, self._outbox = self._outbox, wpb.ToWorker()
        assert self._writer is not None
        if not self._writer.is_closing():
            self._writer.write(frame(message.SerializeToString()))

    def _close_input(self) -> None:
        """End its input: it cancels what it runs and exits."""
        if self._writer is not None:
            self._writer.close()

    async def _read(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                message = wpb.FromWorker.FromString(await read_frame(stream))
                was_busy = self.busy(asyncio.get_running_loop().time())
                self.unanswered_since = None  # its loop came round: it reads what was sent, too
                if was_busy:
                    self.pool.answered()
                finished = message.finished
                for at in range(0, len(finished), OUTCOMES_PER_TURN):
                    if at:
                        await asyncio.sleep(0)
                    for outcome in finished[at : at + OUTCOMES_PER_TURN]:
                        self.pool.finished(self, outcome)
                for action in message.running if self.tells_running else ():
                    job = self.jobs.get((action.run, action.name, action.attempt))
                    if job is not None:
                        _running(job)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # it exited
        except ValueError:
            log.error("worker %s broke the protocol; killing it", self.name)
            self.kill()
        self._close_input()  # its end of the stream is gone: ours goes too
        code, outcome = await self._wait_exit()
        self.pool.exited(self, code, outcome)

    async def _stop_reading(self) -> None:
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class WorkerProcess(FramedWorker):
    """A worker as a local process: frames on its stdin and stdout."""

    def __init__(self, pool: Pool, log_path: Path | None) -> None:
        super().__init__(pool)
        self._log_path = log_path
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        key, sandbox = self.pool.key, self.pool.sandbox
        identity = await asyncio.to_thread(sandbox.identity, key.tenant)
        workdir = sandbox.workdir_of(key.workdir)
        output = await asyncio.to_thread(_open_log, self._log_path)
        exists: bool = bool(workdir) and await asyncio.to_thread(os.path.isdir, workdir)
        cwd = workdir if exists else str(identity.home) if identity else "/"
        env = {**self.pool.env, become_user.ENV_MEMORY: key.memory}
        if identity is not None:
            # It starts as us and drops to the tenant's uid itself, before its first action (become_user.py).
            env.update({"HOME": str(identity.home), become_user.ENV_UID: str(identity.uid)})
            env[become_user.ENV_GID] = str(identity.gid)
            if output != asyncio.subprocess.DEVNULL:
                os.fchown(output, identity.uid, identity.gid)  # its log keeper reopens it as the worker
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *command_dying_with_parent(list(WORKER_COMMAND)),
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=output,
                start_new_session=True,  # its own group: stopping it stops what its tasks started
                limit=1 << 20,
            )
        finally:
            if output != asyncio.subprocess.DEVNULL:
                os.close(output)
        assert self._proc.stdout is not None and self._proc.stdin is not None
        try:
            await self._connect(self._proc.stdout, self._proc.stdin)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            self.kill()
            await self._proc.wait()
            raise RuntimeError(f"the worker did not start (exit code {self._proc.returncode}): {exc!r}") from None

    async def _wait_exit(self) -> tuple[int, Outcome | None]:
        assert self._proc is not None
        return await self._proc.wait(), None

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        """End its input (it cancels what it runs and exits); kill it if it does not."""
        if self._proc is None:
            return
        self._close_input()
        try:
            await asyncio.wait_for(self._proc.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            self.kill()
            await self._proc.wait()
        await self._stop_reading()


# Makes the worker of a pool (log_path: where its output goes, if the backend keeps it in files).
WorkerFactory = Callable[["Pool", Path | None], FramedWorker]


class Pool:
    def __init__(
        self,
        key: PoolKey,
        env: Mapping[str, str],
        log_dir: Path | None,
        template: dpb.LeasedAction,
        new_worker: WorkerFactory = WorkerProcess,
        sandbox: Sandbox | None = None,
    ) -> None:
        self.key = key
        self.env = env
        # The action that made this pool: what its workers' containers are made from (image, resources).
        self.template = template
        # What tenant code may do on this machine (a local worker's uid, home, memory limit).
        self.sandbox = sandbox or Sandbox()
        self._log_dir = log_dir
        self._new_worker = new_worker
        self._log_slots: set[int] = set()
        self.workers: list[FramedWorker] = []
        self._starting = 0
        self._queue: deque[Job] = deque()
        self._tasks: set[asyncio.Task[None]] = set()  # starts and stops in flight
        self._untold_check: asyncio.TimerHandle | None = None

    def submit(
        self,
        action: dpb.LeasedAction,
        on_started: StartedCallback,
        on_done: DoneCallback,
        on_running: StartedCallback | None = None,
    ) -> Job:
        """Run `action` on a worker: on_started() once it is sent there, on_running() once it runs
        past its first step (if given: an action that ends in its first step never calls it), and
        on_done() with its outcome, or WorkerLost, at its end."""
        job = Job(action, (action.run, action.spec.name, action.attempt), self, on_started, on_done, on_running)
        self._queue.append(job)
        self._pump()
        return job

    async def run(
        self, action: dpb.LeasedAction, on_started: StartedCallback, on_running: StartedCallback | None = None
    ) -> Outcome:
        """submit() as a coroutine: the outcome, or WorkerLost raised; cancelling it cancels the job."""
        ended: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()

        def done(outcome: Outcome | WorkerLost) -> None:
            if isinstance(outcome, WorkerLost):
                ended.set_exception(outcome)
            else:
                ended.set_result(outcome)

        job = self.submit(action, on_started, done, on_running)
        try:
            return await ended
        except asyncio.CancelledError:
            job.cancel()
            raise

    def waiting(self, action: dpb.LeasedAction) -> None:
        """The action waits on its children: its slot goes to other work (it stays in its worker)."""
        key = (action.run, action.spec.name, action.attempt)
        for worker in self.workers:
            job = worker.jobs.get(key)
            if job is not None and job.holds_slot:
                job.holds_slot = False
                worker.slots_used -= 1
                self._pump()
                return

    def _pump(self) -> None:
        """Route queued jobs to the least-loaded workers that are not busy; start a worker when all
        are full or busy. Jobs wait here for a worker starting, or for a busy one's next word
        (answered() pumps again); only a pool that can start no other sends them to a busy one."""
        now = asyncio.get_running_loop().time()
        while self._queue:
            free = [w for w in self.workers if w.slots_used < self.key.concurrency]
            ready = [w for w in free if not w.busy(now)]
            if not ready and len(self.workers) + self._starting < self.key.replicas:
                self._start_worker()
            if not ready and (self._starting or not free):
                return
            worker = min(ready or free, key=lambda w: w.slots_used)
            room = self.key.concurrency - worker.slots_used
            for _ in range(min(room, len(self._queue))):
                self._dispatch(self._queue.popleft(), worker, now)

    def _dispatch(self, job: Job, worker: FramedWorker, now: float) -> None:
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
            worker.idle_timer = None
        job.worker = worker
        job.holds_slot = True
        worker.slots_used += 1
        worker.send(job, now)
        timeout = job.action.spec.timeout_seconds
        if timeout:
            job.timer = asyncio.get_running_loop().call_later(timeout, self._time_out, job)
        job.on_started()
        if job.on_running is None:
            return
        if not worker.tells_running:
            _running(job)  # an older worker: running once sent, as it was
            return
        job.sent_at = now
        if self._untold_check is None:
            self._untold_check = asyncio.get_running_loop().call_later(UNTOLD_RUNNING_SECONDS, self._running_untold)

    def _running_untold(self) -> None:
        """Report RUNNING for the actions sent UNTOLD_RUNNING_SECONDS ago that still have not said it."""
        self._untold_check = None
        loop = asyncio.get_running_loop()
        due, untold = loop.time() - UNTOLD_RUNNING_SECONDS, False
        for worker in self.workers:
            for job in worker.jobs.values():
                if job.on_running is not None:
                    if job.sent_at <= due:
                        _running(job)
                    else:
                        untold = True
        if untold:
            self._untold_check = loop.call_later(UNTOLD_RUNNING_SECONDS, self._running_untold)

    def _time_out(self, job: Job) -> None:
        if job.ended or job.worker is None:
            return
        job.worker.cancel(job.key, timed_out=True)
        job.timer = asyncio.get_running_loop().call_later(TIMEOUT_GRACE_SECONDS, self._stuck, job)

    def _stuck(self, job: Job) -> None:
        """The worker did not answer a timeout: its event loop is blocked. Kill it; this action timed out."""
        if job.ended or job.worker is None:
            return
        log.warning("worker %s did not stop %s in time; killing it", job.worker.name, job.key)
        _resolve(job, _timed_out(job.action))
        job.worker.kill()

    def answered(self) -> None:
        """A worker said something after a silence: jobs kept back from it while it was busy may go."""
        if self._queue:
            self._pump()

    def finished(self, worker: FramedWorker, outcome: wpb.WorkerOutcome) -> None:
        job = worker.jobs.pop((outcome.run, outcome.name, outcome.attempt), None)
        if job is None:
            return
        if job.holds_slot:
            worker.slots_used -= 1
        _resolve(job, Outcome(outcome.phase, outcome.result))
        if not worker.jobs:
            self._idle(worker)
        self._pump()

    def exited(self, worker: FramedWorker, code: int, outcome: Outcome | None = None) -> None:
        """A worker ended: by our stop, or it died (then its actions are lost and it is replaced on demand).

        `outcome`: what its unfinished actions end as, when the backend knows why it died (a
        container killed for memory); without it they are lost and run again after their leases.
        """
        if worker in self.workers:
            self.workers.remove(worker)
        self._log_slots.discard(worker.log_slot)
        if worker.jobs:
            held = len(worker.jobs)
            log.warning("worker %s of %s exited (%s) with %d actions", worker.name, self.key.label, code, held)
        lost = WorkerLost(f"worker {worker.name} exited with code {code}")
        for job in list(worker.jobs.values()):
            _resolve(job, outcome if outcome is not None else lost)
        worker.jobs.clear()
        if worker.idle_timer is not None:
            worker.idle_timer.cancel()
        self._pump()

    def _idle(self, worker: FramedWorker) -> None:
        if worker.idle_timer is None:
            ttl = self.key.idle_ttl
            worker.idle_timer = asyncio.get_running_loop().call_later(ttl, self._stop_idle, worker)

    def _stop_idle(self, worker: FramedWorker) -> None:
        worker.idle_timer = None
        if worker.jobs or worker not in self.workers:
            return
        self.workers.remove(worker)  # no new work goes to it from now on
        log.info("stopping idle worker %s of %s", worker.name, self.key.label)
        self._track(worker.stop())

    def _start_worker(self) -> None:
        self._starting += 1
        self._track(self._start())

    async def _start(self) -> None:
        # A log file per slot, not per worker: a pool's logs stay as many as its replicas however often they restart.
        log_slot = min(set(range(len(self._log_slots) + 1)) - self._log_slots)
        log_path = self._log_dir / f"{self.key.label}.{log_slot}.log" if self._log_dir else None
        worker = self._new_worker(self, log_path)
        worker.log_slot = log_slot
        self._log_slots.add(worker.log_slot)
        try:
            await worker.start()
        except (OSError, RuntimeError, ValueError) as exc:
            log.error("cannot start a worker for %s: %s", self.key.label, exc)
            self._log_slots.discard(worker.log_slot)
            self._starting -= 1
            # Fail what waits rather than hold it forever: a broken environment fails its actions.
            while self._queue and not self.workers and not self._starting:
                _resolve(self._queue.popleft(), failure("WorkerStartError", str(exc)))
            return
        self._starting -= 1
        self.workers.append(worker)
        self._pump()
        if not worker.jobs:
            self._idle(worker)

    def _track(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def shutdown(self) -> None:
        if self._untold_check is not None:
            self._untold_check.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        workers, self.workers = self.workers, []
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)


class Pools:
    """Every pool of one dispatcher, keyed by tenant, environment, image, workdir, env and code bundle."""

    def __init__(
        self,
        config: ClientConfig,
        log_dir: Path | None = None,
        new_worker: WorkerFactory = WorkerProcess,
        sandbox: Sandbox | None = None,
    ) -> None:
        self._config = config
        self._log_dir = log_dir
        self._new_worker = new_worker  # local processes, or a container backend's workers
        self._sandbox = sandbox or Sandbox()
        self._pools: dict[PoolKey, Pool] = {}
        # The same pools by the spec's fields as they come, a cheaper key to build per action
        # (its env unsorted: another order of the same env only misses this cache).
        self._by_fields: dict[tuple[Any, ...], Pool] = {}

    def submit(
        self,
        action: dpb.LeasedAction,
        endpoint: str,
        on_started: StartedCallback,
        on_done: DoneCallback,
        on_running: StartedCallback | None = None,
    ) -> Job:
        return self._pool(action, endpoint).submit(action, on_started, on_done, on_running)

    def run(
        self,
        action: dpb.LeasedAction,
        endpoint: str,
        on_started: StartedCallback,
        on_running: StartedCallback | None = None,
    ) -> Awaitable[Outcome]:
        return self._pool(action, endpoint).run(action, on_started, on_running)

    def waiting(self, action: dpb.LeasedAction) -> None:
        pool = self._by_fields.get(_fields(action))
        if pool is not None:
            pool.waiting(action)

    def _pool(self, action: dpb.LeasedAction, endpoint: str) -> Pool:
        fields = _fields(action)
        pool = self._by_fields.get(fields)
        if pool is None:
            key = PoolKey.of(action)
            pool = self._pools.get(key)
            if pool is None:
                env = self.worker_env(action, endpoint)
                pool = self._pools[key] = Pool(key, env, self._log_dir, action, self._new_worker, self._sandbox)
            self._by_fields[fields] = pool
        return pool

    def worker_env(self, action: dpb.LeasedAction, endpoint: str) -> dict[str, str]:
        env = worker_env(action.spec, endpoint, tls_variables(self._config))
        # Sizes the worker's thread pool for plain `def` tasks (see worker.py).
        env[ENV_CONCURRENCY] = str(max(action.spec.reuse.concurrency, 1))
        return env

    def worker_pids(self) -> list[int]:
        return [w.pid for pool in self._pools.values() for w in pool.workers if w.pid is not None]

    async def shutdown(self) -> None:
        pools, self._pools = list(self._pools.values()), {}
        await asyncio.gather(*(pool.shutdown() for pool in pools))


def _running(job: Job) -> None:
    """Say once that the job's action runs (not once it ended: it may be waiting for its cancel's answer)."""
    running, job.on_running = job.on_running, None
    if running is not None and not job.ended:
        running()


def _resolve(job: Job, outcome: Outcome | WorkerLost) -> None:
    """End the job with `outcome`, once (a cancelled job is ended already: nobody waits for it)."""
    if job.ended:
        return
    job.ended = True
    if job.timer is not None:
        job.timer.cancel()
    job.on_done(outcome)


def _timed_out(action: dpb.LeasedAction) -> Outcome:
    return failure("Timeout", f"the action ran longer than {action.spec.timeout_seconds}s", pb.TIMED_OUT)


def _fields(action: dpb.LeasedAction) -> tuple[Any, ...]:
    """The fields of an action that PoolKey.of reads, as a tuple to look its pool up by, per action.

    The reuse policy and the code bundle go as their wire bytes: read field by field (a wrapper
    object per submessage, a tuple of the paths), they took most of this lookup's time.
    """
    s = action.spec
    env = tuple(s.env.items()) if s.env else ()
    code = s.bundle.SerializeToString() if s.HasField("bundle") else None
    return (
        action.tenant,
        s.environment,
        s.image,
        s.workdir,
        s.reuse.SerializeToString(),
        s.resources.memory,
        env,
        code,
    )


def _open_log(path: Path | None) -> int:
    if path is None:
        return asyncio.subprocess.DEVNULL
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
