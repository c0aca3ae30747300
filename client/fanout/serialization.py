"""Inputs and outputs of tasks as JSON, typed by the task's annotations.

Values go out as JSON (readable in `fanout get`), encoded by msgspec; inputs in
a deterministic order, so the same call gives the same bytes, which the
child-name hash needs (results keep their own order: they are shown, never
hashed). Dataclasses, pydantic models, `datetime`, `bytes`, enums, and
`Optional`/`list`/`dict` of them are sent as JSON and come back as the types the
task's annotations name: its parameters' where it runs, its return type where
it is awaited. A value that does not fit its annotation is a TypeError at the
call, before anything is submitted. A parameter without an annotation (or
with one msgspec cannot check, like a DataFrame) travels as plain JSON.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

_ENCODER_ORDER: typing.Literal["deterministic"] = "deterministic"


@dataclass(frozen=True)
class Types:
    """A task's signature and the types its annotations name (Any where there is none)."""

    signature: inspect.Signature
    hints: dict[str, Any]

    @classmethod
    def of(cls, fn: Callable[..., Any]) -> Types:
        try:
            hints = typing.get_type_hints(fn)
        except Exception:  # names the module cannot resolve (defined in a function, say): plain JSON
            hints = {}
        return cls(inspect.signature(fn), hints)

    @functools.cached_property
    def positional(self) -> tuple[str, ...] | None:
        """The names positional arguments bind to, in order; None when *args takes some (bind() decides)."""
        names = []
        for parameter in self.signature.parameters.values():
            if parameter.kind == parameter.VAR_POSITIONAL:
                return None
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                names.append(parameter.name)
        return tuple(names)

    def bound_names(self, args: tuple[Any, ...] | list[Any], kwargs: dict[str, Any]) -> list[str] | None:
        """The parameter of each positional argument when the call is a plain one (no kwargs, no more
        arguments than parameters): the per-action path, without inspect's bind(). None otherwise."""
        names = self.positional
        if kwargs or names is None or len(args) > len(names):
            return None
        return list(names[: len(args)])

    def returns(self) -> Any:
        return self.hints.get("return", Any)

    def of_parameter(self, name: str) -> Any:
        """The type one bound argument must have; Any for *args and **kwargs, which hold many."""
        return self._parameter_types.get(name, Any)

    @functools.cached_property
    def _parameter_types(self) -> dict[str, Any]:
        # Worked out once: every call of the task, and every run of it, checks its arguments.
        many = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        parameters = self.signature.parameters.items()
        return {name: Any if p.kind in many else self.hints.get(name, Any) for name, p in parameters}


def _enc_hook(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # a pydantic model
    if callable(dump):
        return dump(mode="json")
    raise NotImplementedError(f"{type(value).__name__} cannot be sent as JSON")


def _dec_hook(kind: type, value: Any) -> Any:
    validate = getattr(kind, "model_validate", None)  # a pydantic model
    if callable(validate):
        return validate(value)
    raise NotImplementedError(f"{kind!r} cannot be read from JSON")


def _encode(value: Any, order: typing.Literal["deterministic"] | None = _ENCODER_ORDER) -> bytes:
    return msgspec.json.encode(value, enc_hook=_enc_hook, order=order)


# Types whose JSON form is the value itself: an exact match needs no conversion, nor a check.
_SCALARS = frozenset({int, str, float, bool})


def _as_is(value: Any, kind: Any) -> bool:
    """Whether `value` is of `kind` as it is, with nothing to check or convert (most arguments)."""
    return kind is Any or (kind in _SCALARS and type(value) is kind)


def _typed(value: Any, kind: Any) -> Any:
    """`value` (as JSON decodes it) as `kind`; unchanged where `kind` is Any or msgspec cannot check it."""
    if _as_is(value, kind):
        return value
    try:
        return msgspec.convert(value, type=kind, strict=False, dec_hook=_dec_hook)
    except msgspec.ValidationError:
        raise
    except (TypeError, NotImplementedError):  # a type msgspec does not handle: left as JSON gave it
        return value


def _check(what: str, value: Any, kind: Any) -> None:
    """A TypeError when `value` does not fit `kind`, in the words of `what`."""
    if _as_is(value, kind):
        return
    try:
        _typed(msgspec.to_builtins(value, enc_hook=_enc_hook, order=_ENCODER_ORDER), kind)
    except msgspec.ValidationError as exc:
        raise TypeError(f"{what} does not fit its annotation {_name(kind)}: {exc}") from None
    except (TypeError, NotImplementedError) as exc:
        raise TypeError(f"{what} cannot be sent as JSON: {exc}") from None


def encode_inputs(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], types: Types | None = None) -> bytes:
    if types is not None:
        names = types.bound_names(args, kwargs)
        if names is not None:
            for name, value in zip(names, args, strict=True):
                kind = types.of_parameter(name)
                if not _as_is(value, kind):  # named only when checked: a call of a million children
                    _check(f"task {task_name}: argument {name!r}", value, kind)
        else:
            bound = types.signature.bind_partial(*args, **kwargs)
            for name, value in bound.arguments.items():
                _check(f"task {task_name}: argument {name!r}", value, types.of_parameter(name))
    try:
        return _encode({"args": list(args), "kwargs": kwargs})
    except (TypeError, NotImplementedError) as exc:
        raise TypeError(f"inputs of task {task_name} must be JSON-serializable: {exc}") from None


def decode_inputs(data: bytes, types: Types | None = None) -> tuple[list[Any], dict[str, Any]]:
    if not data:
        return [], {}
    payload = msgspec.json.decode(data)
    args, kwargs = payload["args"], payload["kwargs"]
    if types is None:
        return args, kwargs
    names = types.bound_names(args, kwargs)
    if names is not None:
        return [_typed(value, types.of_parameter(name)) for name, value in zip(names, args, strict=True)], {}
    bound = types.signature.bind_partial(*args, **kwargs)
    for name, value in bound.arguments.items():
        bound.arguments[name] = _typed(value, types.of_parameter(name))
    return list(bound.args), dict(bound.kwargs)


def encode_output(task_name: str, value: Any, types: Types | None = None) -> bytes:
    if types is not None:
        _check(f"the result of task {task_name}", value, types.returns())
    try:
        return _encode(value, order=None)  # a result keeps its dicts' order: it is shown, never hashed
    except (TypeError, NotImplementedError) as exc:
        raise TypeError(f"the result of task {task_name} must be JSON-serializable: {exc}") from None


def decode_output(data: bytes, types: Types | None = None) -> Any:
    if not data:
        return None
    value = msgspec.json.decode(data)
    return _typed(value, types.returns()) if types is not None else value


def _name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or repr(kind)
