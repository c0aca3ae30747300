from fanout.v1 import actions_pb2 as _actions_pb2
from fanout.v1 import dispatch_pb2 as _dispatch_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToWorker(_message.Message):
    __slots__ = ("run", "cancel")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    run: _containers.RepeatedCompositeFieldContainer[_dispatch_pb2.LeasedAction]
    cancel: _containers.RepeatedCompositeFieldContainer[WorkerCancel]
    def __init__(self, run: _Optional[_Iterable[_Union[_dispatch_pb2.LeasedAction, _Mapping]]] = ..., cancel: _Optional[_Iterable[_Union[WorkerCancel, _Mapping]]] = ...) -> None: ...

class WorkerCancel(_message.Message):
    __slots__ = ("run", "name", "attempt", "timed_out")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    TIMED_OUT_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    attempt: int
    timed_out: bool
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ..., timed_out: _Optional[bool] = ...) -> None: ...

class FromWorker(_message.Message):
    __slots__ = ("ready", "finished", "running", "hello")
    READY_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    ready: WorkerReady
    finished: _containers.RepeatedCompositeFieldContainer[WorkerOutcome]
    running: _containers.RepeatedCompositeFieldContainer[WorkerAction]
    hello: WorkerHello
    def __init__(self, ready: _Optional[_Union[WorkerReady, _Mapping]] = ..., finished: _Optional[_Iterable[_Union[WorkerOutcome, _Mapping]]] = ..., running: _Optional[_Iterable[_Union[WorkerAction, _Mapping]]] = ..., hello: _Optional[_Union[WorkerHello, _Mapping]] = ...) -> None: ...

class WorkerHello(_message.Message):
    __slots__ = ("worker_id", "key")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    key: str
    def __init__(self, worker_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class WorkerReady(_message.Message):
    __slots__ = ("pid", "tells_running")
    PID_FIELD_NUMBER: _ClassVar[int]
    TELLS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    pid: int
    tells_running: bool
    def __init__(self, pid: _Optional[int] = ..., tells_running: _Optional[bool] = ...) -> None: ...

class WorkerAction(_message.Message):
    __slots__ = ("run", "name", "attempt")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    attempt: int
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class WorkerOutcome(_message.Message):
    __slots__ = ("run", "name", "attempt", "phase", "result")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    attempt: int
    phase: _actions_pb2.Phase
    result: _actions_pb2.ActionResult
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ..., phase: _Optional[_Union[_actions_pb2.Phase, str]] = ..., result: _Optional[_Union[_actions_pb2.ActionResult, _Mapping]] = ...) -> None: ...
