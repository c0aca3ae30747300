"""The fast admission path (specs sliced from the request's bytes, validation screened a list at a
time) accepts and refuses exactly what the one-by-one path does, and hands the scripts the same
names and spec bytes."""

from __future__ import annotations

import random

import pytest

from fanout.quota.admission import ADMIT_CHUNK_ACTIONS, Batch, _read_varint
from fanout.server import validation
from fanout.server.status import ServiceError
from fanout.v1 import actions_pb2 as pb

NAMES = ["c1", "ok_name-2", "", "a\n", "a\nb", "é", "-x", "x" * 128, "y" * 129, "Z", "c1", "n/ame", "a b"]


def random_spec(rng: random.Random, i: int) -> pb.ActionSpec:
    spec = pb.ActionSpec(name=rng.choice(NAMES) if rng.random() < 0.2 else f"c{i}")
    if rng.random() < 0.9:
        spec.task_ref = "m:" + "r" * rng.choice([1, 10, 300, 1100])
    if rng.random() < 0.1:
        spec.command.extend(["a"] * rng.choice([1, 100, 300]))
    if rng.random() < 0.1:
        spec.env.update({f"k{j}": "v" * rng.choice([1, 200]) for j in range(rng.choice([1, 30, 70]))})
    if rng.random() < 0.1:
        spec.task_name = "t" * rng.choice([1, 250, 300])
    if rng.random() < 0.1:
        spec.image = "i" * rng.choice([1, 600])
    spec.inputs = b"x" * rng.choice([0, 2, 40, 200, 5000])
    return spec


def outcome(request: pb.SubmitBatchRequest, max_payload: int, fast: Batch | None) -> tuple[str, object]:
    try:
        validation.batch(
            request.actions,
            100_000,
            max_payload,
            64 << 20,
            sizes=fast.sizes() if fast else None,
            names=[s.name for s in request.actions] if fast else None,
        )
    except ServiceError as exc:
        return str(exc), exc.violations
    return "ok", None


def parse(batch: Batch) -> list[tuple[str, bytes]]:
    """The (name, spec) pairs of a batch, read the way batch.lua reads them."""
    out, pos, wire = [], 0, batch.wire
    while pos < len(wire):
        name = None
        if wire[pos] == 0x0A:
            length, at = _read_varint(wire, pos + 1)
            name, pos = wire[at : at + length].decode(), at + length
        assert wire[pos] == 0x1A
        length, start = _read_varint(wire, pos + 1)
        spec = wire[start : start + length]
        if name is None:
            assert spec[0] == 0x0A
            name_len, at = _read_varint(spec, 1)
            name = spec[at : at + name_len].decode()
        out.append((name, spec))
        pos = start + length
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_fast_path_decides_as_the_slow_one(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 5, 50, 300])
    bad_rate = rng.choice([0.0, 0.0, 0.02, 0.3])
    actions = [
        random_spec(rng, i) if rng.random() < bad_rate else pb.ActionSpec(name=f"c{i}", task_ref="m:x", inputs=b"{}")
        for i in range(n)
    ]
    request = pb.SubmitBatchRequest(run="r1", parent="root", actions=actions, dry_run=rng.random() < 0.5)
    # The request as the server gets it: parsed from what a client sent.
    request = pb.SubmitBatchRequest.FromString(request.SerializeToString())
    wire = request.SerializeToString()
    head = pb.SubmitBatchRequest(run=request.run, parent=request.parent).ByteSize()
    fast = Batch.from_wire(wire, head, [s.name for s in request.actions])
    max_payload = rng.choice([10, 100, 1 << 20])

    assert outcome(request, max_payload, fast) == outcome(request, max_payload, None)
    names = [s.name for s in request.actions]
    if len(set(names)) != len(names):
        assert fast is None  # repeats go the slow way, which keeps the first of each name
    elif fast is not None:
        assert parse(fast) == [(s.name, s.SerializeToString()) for s in request.actions]
        assert sum(len(c) for c in fast.chunks()) == len(fast.wire)


def test_a_batch_from_pairs_keeps_the_first_of_each_name_and_counts_the_repeats() -> None:
    pairs = [("a", b"spec-a"), ("b", b""), ("a", b"other"), ("c", b"\x00" * 300)]

    batch = Batch.from_pairs(pairs)

    assert parse(batch) == [("a", b"spec-a"), ("b", b""), ("c", b"\x00" * 300)]
    assert batch.repeats == 1


def test_chunks_are_bounded_in_actions_and_keep_every_byte_in_order() -> None:
    actions = [pb.ActionSpec(name=f"c{i}", task_ref="m:x") for i in range(2 * ADMIT_CHUNK_ACTIONS + 5)]
    request = pb.SubmitBatchRequest(run="r", parent="p", actions=actions)
    wire = request.SerializeToString()
    batch = Batch.from_wire(wire, pb.SubmitBatchRequest(run="r", parent="p").ByteSize(), [a.name for a in actions])
    assert batch is not None

    chunks = batch.chunks()

    assert [len(parse(Batch(c, []))) for c in chunks] == [ADMIT_CHUNK_ACTIONS, ADMIT_CHUNK_ACTIONS, 5]
    assert b"".join(chunks) == batch.wire


@pytest.mark.parametrize("bad", sorted(set(NAMES)))
@pytest.mark.parametrize("where", [0, 7, 19])
def test_one_odd_name_among_good_ones_is_judged_alike(bad: str, where: int) -> None:
    actions = [pb.ActionSpec(name=f"c{i}", task_ref="m:x", inputs=b"{}") for i in range(20)]
    actions[where].name = bad
    request = pb.SubmitBatchRequest(run="r1", parent="root", actions=actions)
    wire = request.SerializeToString()
    head = pb.SubmitBatchRequest(run="r1", parent="root").ByteSize()
    fast = Batch.from_wire(wire, head, [s.name for s in actions])
    if bad and bad not in {a.name for i, a in enumerate(actions) if i != where}:
        assert fast is not None

    assert outcome(request, 1 << 20, fast) == outcome(request, 1 << 20, None)
