from fanout.v1 import actions_pb2 as _actions_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseRequest(_message.Message):
    __slots__ = ("hello", "credit", "heartbeat", "report")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    credit: int
    heartbeat: Heartbeat
    report: StreamedReport
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., credit: _Optional[int] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., report: _Optional[_Union[StreamedReport, _Mapping]] = ...) -> None: ...

class StreamedReport(_message.Message):
    __slots__ = ("id", "reports")
    ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    reports: _containers.RepeatedCompositeFieldContainer[PhaseReport]
    def __init__(self, id: _Optional[int] = ..., reports: _Optional[_Iterable[_Union[PhaseReport, _Mapping]]] = ...) -> None: ...

class ReportAnswer(_message.Message):
    __slots__ = ("id", "response", "error_code", "error_details")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: ReportResponse
    error_code: int
    error_details: str
    def __init__(self, id: _Optional[int] = ..., response: _Optional[_Union[ReportResponse, _Mapping]] = ..., error_code: _Optional[int] = ..., error_details: _Optional[str] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("dispatcher_id", "capacity")
    DISPATCHER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    dispatcher_id: str
    capacity: int
    def __init__(self, dispatcher_id: _Optional[str] = ..., capacity: _Optional[int] = ...) -> None: ...

class LeaseRef(_message.Message):
    __slots__ = ("tenant", "run", "name", "attempt")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    run: str
    name: str
    attempt: int
    def __init__(self, tenant: _Optional[str] = ..., run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseRef]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseRef, _Mapping]]] = ...) -> None: ...

class LeasedAction(_message.Message):
    __slots__ = ("tenant", "run", "spec", "attempt", "action_token", "parent", "admitted_at", "max_payload_bytes")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ACTION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ADMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    run: str
    spec: _actions_pb2.ActionSpec
    attempt: int
    action_token: str
    parent: str
    admitted_at: float
    max_payload_bytes: int
    def __init__(self, tenant: _Optional[str] = ..., run: _Optional[str] = ..., spec: _Optional[_Union[_actions_pb2.ActionSpec, _Mapping]] = ..., attempt: _Optional[int] = ..., action_token: _Optional[str] = ..., parent: _Optional[str] = ..., admitted_at: _Optional[float] = ..., max_payload_bytes: _Optional[int] = ...) -> None: ...

class LeaseResponse(_message.Message):
    __slots__ = ("actions", "lease_seconds", "waiting", "cancelled", "takes_reports", "answers")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    TAKES_REPORTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[LeasedAction]
    lease_seconds: float
    waiting: _containers.RepeatedCompositeFieldContainer[LeaseRef]
    cancelled: _containers.RepeatedCompositeFieldContainer[LeaseRef]
    takes_reports: bool
    answers: _containers.RepeatedCompositeFieldContainer[ReportAnswer]
    def __init__(self, actions: _Optional[_Iterable[_Union[LeasedAction, _Mapping]]] = ..., lease_seconds: _Optional[float] = ..., waiting: _Optional[_Iterable[_Union[LeaseRef, _Mapping]]] = ..., cancelled: _Optional[_Iterable[_Union[LeaseRef, _Mapping]]] = ..., takes_reports: _Optional[bool] = ..., answers: _Optional[_Iterable[_Union[ReportAnswer, _Mapping]]] = ...) -> None: ...

class PhaseReport(_message.Message):
    __slots__ = ("tenant", "run", "name", "attempt", "phase", "result", "retry_after_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    run: str
    name: str
    attempt: int
    phase: _actions_pb2.Phase
    result: _actions_pb2.ActionResult
    retry_after_seconds: float
    def __init__(self, tenant: _Optional[str] = ..., run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ..., phase: _Optional[_Union[_actions_pb2.Phase, str]] = ..., result: _Optional[_Union[_actions_pb2.ActionResult, _Mapping]] = ..., retry_after_seconds: _Optional[float] = ...) -> None: ...

class ReportRequest(_message.Message):
    __slots__ = ("reports",)
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    reports: _containers.RepeatedCompositeFieldContainer[PhaseReport]
    def __init__(self, reports: _Optional[_Iterable[_Union[PhaseReport, _Mapping]]] = ...) -> None: ...

class ReportResponse(_message.Message):
    __slots__ = ("ignored", "refused")
    IGNORED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    ignored: int
    refused: _containers.RepeatedCompositeFieldContainer[RefusedReport]
    def __init__(self, ignored: _Optional[int] = ..., refused: _Optional[_Iterable[_Union[RefusedReport, _Mapping]]] = ...) -> None: ...

class RefusedReport(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...
