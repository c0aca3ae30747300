"""Typed inputs and outputs through the real control plane: they round-trip as their annotations say."""

from __future__ import annotations

import inspect
import sys
from datetime import datetime
from pathlib import Path

import pydantic
import pytest

import fanout
from fanout import serialization
from fanout.runtime import load_task
from fanout.v1 import actions_pb2 as pb
from tests.conftest import Tenant
from tests.tasks import typed_tasks
from tests.tasks.typed_tasks import Color, Point, Shifted

TASKS = Path(typed_tasks.__file__)

pytestmark = pytest.mark.usefixtures("dispatcher")


def test_dataclasses_datetimes_enums_and_bytes_round_trip_through_a_fanout(tenant: Tenant) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    task = load_task(f"file:{TASKS}:shift_all")
    # A file's tasks load as a module of their own: its classes are the ones results come back as.
    types = sys.modules[task.fn.__module__]
    groups = {"a": [types.Point(0, 0, "origin")], "b": [types.Point(1.5, 2), types.Point(3, 4)]}

    result = fanout.run(task, groups).outputs()

    assert result["b"].points == [types.Point(2.5, 3), types.Point(4, 5)]
    assert isinstance(result["a"], types.Shifted)
    assert result["a"].at == datetime(2026, 11, 29, 12, 0)
    assert (result["a"].color, result["a"].blob) == (types.Color.BLUE, b"a")


def test_a_child_called_with_the_wrong_type_fails_its_parent_before_anything_is_sent(tenant: Tenant) -> None:
    fanout.init(endpoint=tenant.client.config.endpoint, token=tenant.token)
    run = fanout.run(load_task(f"file:{TASKS}:calls_badly"))
    with pytest.raises(fanout.errors.RuntimeUserError, match="argument 'n' does not fit its annotation int"):
        run.outputs()
    assert [a.name for a in tenant.client.list_actions(pb.ListActionsRequest(run=run.name)).actions] == ["root"]


def test_a_root_with_the_wrong_type_is_refused_before_the_run_is_created() -> None:
    with pytest.raises(TypeError, match="argument 'points' does not fit"):
        serialization.encode_inputs(
            "typed.shift", ([{"x": "not a number"}], datetime.now(), Color.RED, b""), {}, typed_tasks.shift.types
        )


def test_inputs_encode_the_same_whatever_the_order_of_a_dicts_keys() -> None:
    types = typed_tasks.shift_all.types
    one = serialization.encode_inputs("t", ({"a": [Point(1, 2)], "b": []},), {}, types)
    two = serialization.encode_inputs("t", ({"b": [], "a": [Point(1, 2)]},), {}, types)
    assert one == two  # the child-name hash depends on these bytes


def test_results_come_back_as_the_return_annotation_says() -> None:
    types = typed_tasks.shift.types
    value = Shifted([Point(1, 2)], datetime(2026, 1, 1), Color.RED, b"\x00\xff")
    data = serialization.encode_output("typed.shift", value, types)
    assert serialization.decode_output(data, types) == value
    assert serialization.decode_output(data)["blob"] == "AP8="  # untyped readers (fanout get) see JSON


def test_pydantic_models_round_trip_and_are_checked() -> None:
    class Order(pydantic.BaseModel):  # the dev extra installs pydantic; the SDK does not need it
        sku: str
        quantity: int

    def place(order: Order) -> Order:
        return order

    types = serialization.Types(inspect.signature(place), {"order": Order, "return": Order})
    data = serialization.encode_inputs("t", (Order(sku="a-1", quantity=2),), {}, types)
    args, _ = serialization.decode_inputs(data, types)
    assert args == [Order(sku="a-1", quantity=2)]
    with pytest.raises(TypeError, match="does not fit"):
        serialization.encode_inputs("t", ({"sku": "a-1", "quantity": "many"},), {}, types)
