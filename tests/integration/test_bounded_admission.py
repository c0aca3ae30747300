"""Big batches, big replays and stale queues are worked in short Redis scripts, never one long one.

Redis runs one command at a time: one long script stalls every tenant. SLOWLOG on this module's
own Redis shows every script's time. The server here is the module's own too, with no
dispatcher, so nothing leases these actions behind the tests' backs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import redis
import redis.asyncio as aioredis
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from fanout import errors
from fanout.quota import keys
from fanout.quota.actions import (
    HEARTBEAT_CHUNK,
    LEASE_WORK,
    REPORT_CHUNK,
    ActionStore,
    LeasedAction,
    LeaseRef,
    Report,
)
from fanout.quota.admission import ADMIT_CHUNK_ACTIONS, STALLED_MOVE_SECONDS, chunked
from fanout.quota.errors import FailedPrecondition, QuotaExceeded
from fanout.quota.scripts import Scripts
from fanout.server.app import ControlPlane
from fanout.v1 import actions_pb2 as pb
from fanout.v1 import actions_pb2_grpc
from tests.conftest import Tenant, make_tenant
from tests.helpers import LoopThread, eventually

# Generous against a busy 2-core machine; the chunks aim at a few milliseconds each
# (bench/slowlog.py prints the exact figures).
SCRIPT_BOUND_US = 50_000
BIG = 20_000


@pytest.fixture(scope="module")
def r(own_redis_client: redis.Redis) -> redis.Redis:
    return own_redis_client


@pytest.fixture
def tenant(loop_thread: LoopThread, own_plane: ControlPlane) -> Iterator[Tenant]:
    t = make_tenant(loop_thread, own_plane, f"127.0.0.1:{own_plane.port}", prefix="ba")
    t.set_limits(max_fanout=1_000_000)
    yield t
    t.client.close()


class Slowlog:
    """Every script Redis runs from here on, with its time (commands inside scripts are left out)."""

    def __init__(self, r: redis.Redis) -> None:
        self._r = r
        r.config_set("slowlog-max-len", 100_000)
        r.config_set("slowlog-log-slower-than", 0)
        r.slowlog_reset()

    def scripts(self, name: str | None = None) -> list[int]:
        """Times in µs of every script run, or of script `name` only."""
        entries = self._r.slowlog_get(-1)
        self._r.config_set("slowlog-log-slower-than", 10_000)
        prefix = b"EVALSHA " + (getattr(SCRIPTS, name).sha.encode() if name else b"")
        return [int(e["duration"]) for e in entries if e["command"].startswith(prefix)]


# Only for the scripts' SHAs: registering computes them without a connection.
SCRIPTS = Scripts.register(aioredis.Redis())


def specs(prefix: str, n: int, size: int = 0) -> list[pb.ActionSpec]:
    inputs = b"x" * size or b"{}"
    return [pb.ActionSpec(name=f"{prefix}{i}", task_ref="module:tests:noop", inputs=inputs) for i in range(n)]


def pairs(prefix: str, n: int) -> list[tuple[str, bytes]]:
    return [(s.name, s.SerializeToString()) for s in specs(prefix, n)]


def new_run(tenant: Tenant) -> str:
    return tenant.client.create_run(pb.ActionSpec(task_ref="module:tests:root")).name


def usage(r: redis.Redis, tenant: Tenant, run: str) -> dict[str, int]:
    """The counters and the records they must equal."""
    k = keys.TenantKeys(tenant.name)
    meta = r.hgetall(k.run(run))
    stats = r.hgetall(k.stats)
    return {
        "count": int(meta[b"count"]),
        "states": r.hlen(k.states(run)),
        "queued": int(stats.get(b"queued", 0)),
        "bytes": int(stats.get(b"bytes", 0)),
        "spec_bytes": sum(len(v) for v in r.hvals(k.specs(run))),
        "kids": r.llen(k.kids(run, "root")),
        "run_queue": r.llen(k.run_queue(run)),
    }


def assert_counters_true(r: redis.Redis, tenant: Tenant, run: str) -> dict[str, int]:
    u = usage(r, tenant, run)
    assert u["count"] == u["states"] == u["queued"] == u["kids"] + 1 == u["run_queue"]
    assert u["bytes"] == u["spec_bytes"]
    return u


def staging_keys(r: redis.Redis, tenant: Tenant) -> list[bytes]:
    prefix = keys.tenant_prefix(tenant.name)
    return [key for pattern in ("stage:*", "stageq:*") for key in r.scan_iter(prefix + pattern)]


def test_a_big_batch_is_admitted_in_short_scripts(tenant: Tenant, r: redis.Redis) -> None:
    run = new_run(tenant)
    batch = specs("c", BIG)
    log = Slowlog(r)

    response = tenant.client.submit_batch(run, "root", batch)

    times = log.scripts()
    assert (response.admitted, response.already_present, response.fanout_used) == (BIG, 0, BIG + 1)
    assert len(times) >= BIG // ADMIT_CHUNK_ACTIONS
    assert max(times) < SCRIPT_BOUND_US, sorted(times)[-5:]
    assert assert_counters_true(r, tenant, run)["count"] == BIG + 1
    assert staging_keys(r, tenant) == []
    assert tenant.client.get_action(run, f"c{BIG - 1}").phase == pb.QUEUED


def test_a_resubmitted_big_batch_is_charged_once(tenant: Tenant, r: redis.Redis) -> None:
    run = new_run(tenant)
    batch = specs("c", BIG)
    tenant.client.submit_batch(run, "root", batch[: BIG // 2])

    response = tenant.client.submit_batch(run, "root", batch + batch[:10])  # repeats inside the batch too

    assert (response.admitted, response.already_present) == (BIG // 2, BIG // 2 + 10)
    assert assert_counters_true(r, tenant, run)["count"] == BIG + 1


def test_a_rejected_big_batch_charges_nothing_and_leaves_no_staging(tenant: Tenant, r: redis.Redis) -> None:
    tenant.set_limits(max_fanout=BIG)
    run = new_run(tenant)
    before = usage(r, tenant, run)

    with pytest.raises(errors.FanoutLimitExceeded) as info:
        tenant.client.submit_batch(run, "root", specs("c", BIG))

    assert "limit 20000, used 1, requested 20000" in str(info.value)
    assert usage(r, tenant, run) == before
    assert staging_keys(r, tenant) == []
    assert r.zcard(keys.TenantKeys(tenant.name).committed) == 0


def test_a_dry_run_of_a_big_batch_answers_and_charges_nothing(tenant: Tenant, r: redis.Redis) -> None:
    run = new_run(tenant)
    before = usage(r, tenant, run)

    response = tenant.client.submit_batch(run, "root", specs("c", BIG), dry_run=True)

    assert (response.admitted, response.fanout_used) == (BIG, BIG + 1)
    assert usage(r, tenant, run) == before
    assert staging_keys(r, tenant) == []


@pytest.mark.parametrize("n", [10, BIG], ids=["one-script", "staged"])
def test_max_stored_bytes_rejects_the_whole_batch_with_the_figures(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane, n: int
) -> None:
    run = new_run(tenant)
    stored = usage(r, tenant, run)["bytes"]
    batch = specs("c", n, size=100)
    size = sum(len(s.SerializeToString()) for s in batch)
    tenant.set_limits(max_stored_bytes=stored + size - 1)
    stub = actions_pb2_grpc.ActionServiceStub(grpc.insecure_channel(f"127.0.0.1:{own_plane.port}"))

    with pytest.raises(grpc.RpcError) as info:
        stub.SubmitBatch(
            pb.SubmitBatchRequest(run=run, parent="root", actions=batch),
            metadata=[("authorization", f"Bearer {tenant.token}")],
        )

    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rpc_status.from_call(info.value)
    assert status is not None
    failure = error_details_pb2.QuotaFailure()
    assert status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "max_stored_bytes"
    assert failure.violations[0].description == f"limit {stored + size - 1}, used {stored}, requested {size}"
    assert usage(r, tenant, run)["bytes"] == stored
    assert usage(r, tenant, run)["count"] == 1

    tenant.set_limits(max_stored_bytes=stored + size)  # exactly enough
    assert tenant.client.submit_batch(run, "root", batch).admitted == n
    assert assert_counters_true(r, tenant, run)["bytes"] == stored + size


def test_a_batch_committed_but_not_moved_is_finished_by_the_servers_loop(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    """A server dies between the commit and the last move: charged, invisible, then rolled forward."""
    run = new_run(tenant)
    store: ActionStore = own_plane.actions
    batch, (fresh, _, _, _, left) = tenant.loop.run(
        store._admitter.stage_and_commit(tenant.name, run, "root", chunked(pairs("c", BIG)))
    )
    assert (fresh, left) == (BIG, 1)
    k = keys.TenantKeys(tenant.name)
    assert r.zscore(k.committed, f"{run}/{batch}") is not None
    u = usage(r, tenant, run)
    assert (u["count"], u["queued"], u["states"], u["kids"]) == (BIG + 1, BIG + 1, 1, 0)  # charged, not visible
    assert r.ttl(k.stage_specs(run, batch)) == -1  # committed staging does not expire

    eventually(lambda: r.llen(k.kids(run, "root")) == BIG, timeout=STALLED_MOVE_SECONDS + 15)

    assert assert_counters_true(r, tenant, run)["count"] == BIG + 1
    assert r.zcard(k.committed) == 0
    eventually(lambda: staging_keys(r, tenant) == [])


def test_a_resubmission_finishes_a_committed_batch_first_and_is_charged_once(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    """The client retries a SubmitBatch whose server died mid-move: it learns everything is present."""
    run = new_run(tenant)
    store: ActionStore = own_plane.actions
    tenant.loop.run(store._admitter.stage_and_commit(tenant.name, run, "root", chunked(pairs("c", BIG))))

    again = tenant.client.submit_batch(run, "root", specs("c", BIG))
    small = tenant.client.submit_batch(run, "root", specs("c", 5))

    assert (again.admitted, again.already_present) == (0, BIG)
    assert (small.admitted, small.already_present) == (0, 5)
    assert assert_counters_true(r, tenant, run)["count"] == BIG + 1


def test_racing_big_batches_never_pass_max_fanout_and_counters_stay_true(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    tenant.set_limits(max_fanout=2 * BIG)  # room for two of the three distinct batches, not three
    run = new_run(tenant)
    store: ActionStore = own_plane.actions
    batches = [pairs("a", BIG), pairs("b", BIG), pairs("c", BIG), pairs("a", BIG)]  # the last repeats the first

    async def race() -> list[object]:
        return await asyncio.gather(
            *(store.admit(tenant.name, run, "root", batch) for batch in batches), return_exceptions=True
        )

    outcomes = tenant.loop.run(race(), timeout=60)

    refused = [o for o in outcomes if isinstance(o, QuotaExceeded)]
    assert refused, outcomes
    assert all(isinstance(o, QuotaExceeded) or not isinstance(o, Exception) for o in outcomes), outcomes
    u = assert_counters_true(r, tenant, run)
    assert u["count"] <= 2 * BIG
    assert r.zcard(keys.TenantKeys(tenant.name).committed) == 0


def test_an_ended_run_takes_no_new_children(tenant: Tenant, r: redis.Redis, own_plane: ControlPlane) -> None:
    run = new_run(tenant)
    tenant.client.submit_batch(run, "root", specs("c", 10))
    tenant.client.abort_run(run)

    for n in (5, BIG):
        with pytest.raises(errors.FanoutError) as info:
            tenant.client.submit_batch(run, "root", specs("d", n))
        assert "has finished or is being aborted" in str(info.value)
    with pytest.raises(FailedPrecondition):
        tenant.loop.run(own_plane.actions.admit(tenant.name, run, "root", pairs("e", 3)))
    assert usage(r, tenant, run)["count"] == 11
    assert staging_keys(r, tenant) == []


def test_a_lease_drops_an_aborted_runs_queue_in_short_scripts(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    run = new_run(tenant)
    tenant.client.submit_batch(run, "root", specs("c", BIG))
    live = new_run(tenant)  # another run of the tenant, queued after the aborted one
    tenant.client.abort_run(run)
    k = keys.TenantKeys(tenant.name)
    log = Slowlog(r)

    leased = tenant.loop.run(own_plane.actions.lease(tenant.name, 10))

    times = log.scripts("lease")
    assert [(a.run, a.name) for a in leased] == [(live, "root")]
    assert max(times) < SCRIPT_BOUND_US, sorted(times)[-5:]
    assert not r.exists(k.run_queue(run))  # unlinked whole, not popped entry by entry
    assert r.lrange(k.runs, 0, -1) == []


def test_leasing_is_round_robin_over_runs_and_keeps_max_concurrency(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    tenant.set_limits(max_concurrency=7)
    runs = [new_run(tenant) for _ in range(2)]
    for run in runs:
        tenant.client.submit_batch(run, "root", specs("c", 50))
    store: ActionStore = own_plane.actions

    first = tenant.loop.run(store.lease(tenant.name, 2))
    second = tenant.loop.run(store.lease(tenant.name, 2))
    rest = tenant.loop.run(store.lease(tenant.name, 100))

    assert [a.run for a in first] == [runs[0], runs[0]]
    assert [a.run for a in second] == [runs[1], runs[1]]
    assert len(rest) == 3  # 7 slots in all
    assert tenant.running() == 7
    assert tenant.loop.run(store.lease(tenant.name, 100)) == []


def test_a_replay_pages_through_every_child_with_one_replay_done(tenant: Tenant, r: redis.Redis) -> None:
    run = new_run(tenant)
    n = 2_500
    tenant.client.submit_batch(run, "root", specs("c", n))
    log = Slowlog(r)

    names: list[str] = []
    done: list[str] = []
    started = time.monotonic()
    for event in tenant.client.watch_children(run, "root", timeout=30):
        if event.HasField("update"):
            assert not done
            names.append(event.update.name)
        if event.HasField("replay_done"):
            done.append(event.cursor)
            break
    assert time.monotonic() - started < 30

    assert names == [f"c{i}" for i in range(n)]
    assert done == ["0-0"]
    snapshots = log.scripts("snapshot")
    assert len(snapshots) >= 3  # pages, not one script for every child
    assert max(snapshots) < SCRIPT_BOUND_US


@pytest.mark.parametrize("cursor", ["١٢-٣", "²-1", "18446744073709551616-0", "1-18446744073709551616", "1-2\n", "-1"])
def test_a_bad_cursor_is_invalid_argument(tenant: Tenant, own_plane: ControlPlane, cursor: str) -> None:
    run = new_run(tenant)
    stub = actions_pb2_grpc.ActionServiceStub(grpc.insecure_channel(f"127.0.0.1:{own_plane.port}"))

    with pytest.raises(grpc.RpcError) as info:
        next(
            iter(
                stub.WatchChildren(
                    pb.WatchChildrenRequest(run=run, parent="root", cursor=cursor),
                    metadata=[("authorization", f"Bearer {tenant.token}")],
                    timeout=10,
                )
            )
        )

    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_largest_cursor_is_accepted(tenant: Tenant) -> None:
    run = new_run(tenant)
    top = "18446744073709551615-18446744073709551615"
    events = tenant.client.watch_children(run, "root", cursor=top, timeout=3)
    with pytest.raises(errors.DeadlineExceeded):
        for _ in events:  # nothing after the largest id; the watch waits until its deadline
            pass


def test_a_committed_batch_of_a_parent_aborted_before_the_move_queues_nothing(
    tenant: Tenant, r: redis.Redis, own_plane: ControlPlane
) -> None:
    """The children of an aborted parent are never queued, even when they were committed before its abort."""
    run = new_run(tenant)
    tenant.client.submit_batch(run, "root", [pb.ActionSpec(name="mid", task_ref="module:tests:noop")])
    store: ActionStore = own_plane.actions
    tenant.loop.run(store._admitter.stage_and_commit(tenant.name, run, "mid", chunked(pairs("c", BIG))))

    assert tenant.client.abort_actions(run, ["mid"]) == 1
    k = keys.TenantKeys(tenant.name)
    eventually(lambda: r.zcard(k.committed) == 0, timeout=STALLED_MOVE_SECONDS + 15)

    assert r.llen(k.kids(run, "mid")) == 0
    count: Any = r.hget(k.run(run), "count")
    assert r.hlen(k.states(run)) == int(count) == 2  # root and mid: the charge came back
    assert tenant.queued() == 1  # the root


def leased_children(tenant: Tenant, store: ActionStore, run: str, n: int) -> list[LeasedAction]:
    """Admit `n` children of a new root and lease them all (the root too, which stays leased)."""
    tenant.set_limits(max_concurrency=n + 1)
    tenant.client.submit_batch(run, "root", specs("c", n))
    leased: list[LeasedAction] = []
    for _ in range(2 * n // LEASE_WORK + 2):  # bounded: each call leases up to LEASE_WORK
        leased += tenant.loop.run(store.lease(tenant.name, LEASE_WORK))
    children = [a for a in leased if a.parent]
    assert len(children) == n
    return children


def test_a_big_report_is_applied_in_short_scripts(tenant: Tenant, r: redis.Redis, own_plane: ControlPlane) -> None:
    """A dispatcher may report its whole capacity in one call; it is applied a chunk per script."""
    store: ActionStore = own_plane.actions
    run = new_run(tenant)
    children = leased_children(tenant, store, run, BIG)
    result = pb.ActionResult(outputs=b"1").SerializeToString()
    reports = [Report(a.run, a.name, a.attempt, pb.SUCCEEDED, result) for a in children]
    log = Slowlog(r)

    ignored = tenant.loop.run(store.report(tenant.name, reports))

    times = log.scripts("report")
    assert ignored == 0
    assert len(times) >= BIG // REPORT_CHUNK
    assert max(times) < SCRIPT_BOUND_US, sorted(times)[-5:]
    assert r.scard(keys.TenantKeys(tenant.name).slots) == 1  # only the root holds a slot now
    assert tenant.client.get_action(run, f"c{BIG - 1}").phase == pb.SUCCEEDED


def test_a_big_heartbeat_is_renewed_in_short_scripts(tenant: Tenant, r: redis.Redis, own_plane: ControlPlane) -> None:
    store: ActionStore = own_plane.actions
    run = new_run(tenant)
    children = leased_children(tenant, store, run, BIG)
    leased_key = keys.TenantKeys(tenant.name).leased
    before = r.zscore(leased_key, f"{run}/c{BIG - 1}")
    assert before is not None
    time.sleep(0.01)  # the renewed deadline is later than the first one
    log = Slowlog(r)

    waiting, cancelled = tenant.loop.run(
        store.heartbeat(tenant.name, [LeaseRef(a.run, a.name, a.attempt) for a in children])
    )

    times = log.scripts("heartbeat")
    assert (waiting, cancelled) == ([], [])
    assert len(times) >= BIG // HEARTBEAT_CHUNK
    assert max(times) < SCRIPT_BOUND_US, sorted(times)[-5:]
    after = r.zscore(leased_key, f"{run}/c{BIG - 1}")
    assert after is not None and after > before
