from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Phase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHASE_UNSPECIFIED: _ClassVar[Phase]
    QUEUED: _ClassVar[Phase]
    WAITING_FOR_RESOURCES: _ClassVar[Phase]
    INITIALIZING: _ClassVar[Phase]
    RUNNING: _ClassVar[Phase]
    SUCCEEDED: _ClassVar[Phase]
    FAILED: _ClassVar[Phase]
    ABORTED: _ClassVar[Phase]
    TIMED_OUT: _ClassVar[Phase]
PHASE_UNSPECIFIED: Phase
QUEUED: Phase
WAITING_FOR_RESOURCES: Phase
INITIALIZING: Phase
RUNNING: Phase
SUCCEEDED: Phase
FAILED: Phase
ABORTED: Phase
TIMED_OUT: Phase

class Resources(_message.Message):
    __slots__ = ("cpu", "memory")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    cpu: str
    memory: str
    def __init__(self, cpu: _Optional[str] = ..., memory: _Optional[str] = ...) -> None: ...

class ActionSpec(_message.Message):
    __slots__ = ("name", "task_name", "task_ref", "image", "command", "env", "resources", "retries", "timeout_seconds", "inputs", "workdir", "environment", "reuse", "backoff", "max_queued_seconds", "group", "trace_parent", "bundle")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_REF_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    RESOURCES_FIELD_NUMBER: _ClassVar[int]
    RETRIES_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    REUSE_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    task_name: str
    task_ref: str
    image: str
    command: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    resources: Resources
    retries: int
    timeout_seconds: int
    inputs: bytes
    workdir: str
    environment: str
    reuse: ReusePolicy
    backoff: RetryBackoff
    max_queued_seconds: int
    group: str
    trace_parent: str
    bundle: CodeBundle
    def __init__(self, name: _Optional[str] = ..., task_name: _Optional[str] = ..., task_ref: _Optional[str] = ..., image: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., resources: _Optional[_Union[Resources, _Mapping]] = ..., retries: _Optional[int] = ..., timeout_seconds: _Optional[int] = ..., inputs: _Optional[bytes] = ..., workdir: _Optional[str] = ..., environment: _Optional[str] = ..., reuse: _Optional[_Union[ReusePolicy, _Mapping]] = ..., backoff: _Optional[_Union[RetryBackoff, _Mapping]] = ..., max_queued_seconds: _Optional[int] = ..., group: _Optional[str] = ..., trace_parent: _Optional[str] = ..., bundle: _Optional[_Union[CodeBundle, _Mapping]] = ...) -> None: ...

class CodeBundle(_message.Message):
    __slots__ = ("digest", "paths")
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    PATHS_FIELD_NUMBER: _ClassVar[int]
    digest: str
    paths: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, digest: _Optional[str] = ..., paths: _Optional[_Iterable[str]] = ...) -> None: ...

class RetryBackoff(_message.Message):
    __slots__ = ("base_seconds", "factor", "cap_seconds")
    BASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    CAP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    base_seconds: float
    factor: float
    cap_seconds: float
    def __init__(self, base_seconds: _Optional[float] = ..., factor: _Optional[float] = ..., cap_seconds: _Optional[float] = ...) -> None: ...

class ReusePolicy(_message.Message):
    __slots__ = ("replicas", "concurrency", "idle_ttl_seconds")
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    IDLE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    replicas: int
    concurrency: int
    idle_ttl_seconds: float
    def __init__(self, replicas: _Optional[int] = ..., concurrency: _Optional[int] = ..., idle_ttl_seconds: _Optional[float] = ...) -> None: ...

class ActionResult(_message.Message):
    __slots__ = ("outputs", "error", "output")
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    outputs: bytes
    error: ActionError
    output: bytes
    def __init__(self, outputs: _Optional[bytes] = ..., error: _Optional[_Union[ActionError, _Mapping]] = ..., output: _Optional[bytes] = ...) -> None: ...

class ActionError(_message.Message):
    __slots__ = ("type", "message", "traceback", "non_recoverable")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    NON_RECOVERABLE_FIELD_NUMBER: _ClassVar[int]
    type: str
    message: str
    traceback: str
    non_recoverable: bool
    def __init__(self, type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ..., non_recoverable: _Optional[bool] = ...) -> None: ...

class ActionStatus(_message.Message):
    __slots__ = ("run", "name", "parent", "task_name", "phase", "attempt", "result", "group")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    TASK_NAME_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    parent: str
    task_name: str
    phase: Phase
    attempt: int
    result: ActionResult
    group: str
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ..., parent: _Optional[str] = ..., task_name: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., attempt: _Optional[int] = ..., result: _Optional[_Union[ActionResult, _Mapping]] = ..., group: _Optional[str] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("name", "root", "phase", "action_count", "created_at", "url", "phase_counts")
    class PhaseCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    ACTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    PHASE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    root: str
    phase: Phase
    action_count: int
    created_at: float
    url: str
    phase_counts: _containers.ScalarMap[str, int]
    def __init__(self, name: _Optional[str] = ..., root: _Optional[str] = ..., phase: _Optional[_Union[Phase, str]] = ..., action_count: _Optional[int] = ..., created_at: _Optional[float] = ..., url: _Optional[str] = ..., phase_counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("phases", "name_prefix", "created_after", "created_before", "limit", "cursor")
    PHASES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    phases: _containers.RepeatedScalarFieldContainer[Phase]
    name_prefix: str
    created_after: float
    created_before: float
    limit: int
    cursor: str
    def __init__(self, phases: _Optional[_Iterable[_Union[Phase, str]]] = ..., name_prefix: _Optional[str] = ..., created_after: _Optional[float] = ..., created_before: _Optional[float] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_cursor")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_cursor: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class ListActionsRequest(_message.Message):
    __slots__ = ("run", "phases", "name_prefix", "group", "limit", "cursor")
    RUN_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    run: str
    phases: _containers.RepeatedScalarFieldContainer[Phase]
    name_prefix: str
    group: str
    limit: int
    cursor: str
    def __init__(self, run: _Optional[str] = ..., phases: _Optional[_Iterable[_Union[Phase, str]]] = ..., name_prefix: _Optional[str] = ..., group: _Optional[str] = ..., limit: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListActionsResponse(_message.Message):
    __slots__ = ("actions", "next_cursor")
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    actions: _containers.RepeatedCompositeFieldContainer[ActionStatus]
    next_cursor: str
    def __init__(self, actions: _Optional[_Iterable[_Union[ActionStatus, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("run_name", "root")
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    run_name: str
    root: ActionSpec
    def __init__(self, run_name: _Optional[str] = ..., root: _Optional[_Union[ActionSpec, _Mapping]] = ...) -> None: ...

class CreateRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class SubmitBatchRequest(_message.Message):
    __slots__ = ("run", "parent", "actions", "dry_run")
    RUN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    ACTIONS_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    run: str
    parent: str
    actions: _containers.RepeatedCompositeFieldContainer[ActionSpec]
    dry_run: bool
    def __init__(self, run: _Optional[str] = ..., parent: _Optional[str] = ..., actions: _Optional[_Iterable[_Union[ActionSpec, _Mapping]]] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class SubmitBatchResponse(_message.Message):
    __slots__ = ("admitted", "already_present", "fanout_used", "fanout_limit")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    FANOUT_USED_FIELD_NUMBER: _ClassVar[int]
    FANOUT_LIMIT_FIELD_NUMBER: _ClassVar[int]
    admitted: int
    already_present: int
    fanout_used: int
    fanout_limit: int
    def __init__(self, admitted: _Optional[int] = ..., already_present: _Optional[int] = ..., fanout_used: _Optional[int] = ..., fanout_limit: _Optional[int] = ...) -> None: ...

class WatchChildrenRequest(_message.Message):
    __slots__ = ("run", "parent", "cursor", "batched", "with_groups")
    RUN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    BATCHED_FIELD_NUMBER: _ClassVar[int]
    WITH_GROUPS_FIELD_NUMBER: _ClassVar[int]
    run: str
    parent: str
    cursor: str
    batched: bool
    with_groups: bool
    def __init__(self, run: _Optional[str] = ..., parent: _Optional[str] = ..., cursor: _Optional[str] = ..., batched: _Optional[bool] = ..., with_groups: _Optional[bool] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("update", "replay_done", "cursor", "updates")
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    REPLAY_DONE_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    UPDATES_FIELD_NUMBER: _ClassVar[int]
    update: ActionStatus
    replay_done: ReplayDone
    cursor: str
    updates: _containers.RepeatedCompositeFieldContainer[ActionStatus]
    def __init__(self, update: _Optional[_Union[ActionStatus, _Mapping]] = ..., replay_done: _Optional[_Union[ReplayDone, _Mapping]] = ..., cursor: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[ActionStatus, _Mapping]]] = ...) -> None: ...

class ReplayDone(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SubmitManyRequest(_message.Message):
    __slots__ = ("sections",)
    SECTIONS_FIELD_NUMBER: _ClassVar[int]
    sections: _containers.RepeatedCompositeFieldContainer[SubmitSection]
    def __init__(self, sections: _Optional[_Iterable[_Union[SubmitSection, _Mapping]]] = ...) -> None: ...

class SubmitSection(_message.Message):
    __slots__ = ("action_token", "batch")
    ACTION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    action_token: str
    batch: SubmitBatchRequest
    def __init__(self, action_token: _Optional[str] = ..., batch: _Optional[_Union[SubmitBatchRequest, _Mapping]] = ...) -> None: ...

class SubmitManyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitSectionResult]
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitSectionResult, _Mapping]]] = ...) -> None: ...

class SubmitSectionResult(_message.Message):
    __slots__ = ("admitted", "error")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    admitted: SubmitBatchResponse
    error: bytes
    def __init__(self, admitted: _Optional[_Union[SubmitBatchResponse, _Mapping]] = ..., error: _Optional[bytes] = ...) -> None: ...

class WatchManyRequest(_message.Message):
    __slots__ = ("add", "remove")
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    add: WatchAdd
    remove: WatchRemove
    def __init__(self, add: _Optional[_Union[WatchAdd, _Mapping]] = ..., remove: _Optional[_Union[WatchRemove, _Mapping]] = ...) -> None: ...

class WatchAdd(_message.Message):
    __slots__ = ("id", "action_token", "run", "parent", "cursor")
    ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    id: int
    action_token: str
    run: str
    parent: str
    cursor: str
    def __init__(self, id: _Optional[int] = ..., action_token: _Optional[str] = ..., run: _Optional[str] = ..., parent: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class WatchRemove(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class WatchManyResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[WatchManyEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[WatchManyEvent, _Mapping]]] = ...) -> None: ...

class WatchManyEvent(_message.Message):
    __slots__ = ("id", "event", "ended")
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ENDED_FIELD_NUMBER: _ClassVar[int]
    id: int
    event: WatchEvent
    ended: bytes
    def __init__(self, id: _Optional[int] = ..., event: _Optional[_Union[WatchEvent, _Mapping]] = ..., ended: _Optional[bytes] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: str
    def __init__(self, run: _Optional[str] = ...) -> None: ...

class GetActionRequest(_message.Message):
    __slots__ = ("run", "name")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class GetLogsRequest(_message.Message):
    __slots__ = ("run", "name", "attempt")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    run: str
    name: str
    attempt: int
    def __init__(self, run: _Optional[str] = ..., name: _Optional[str] = ..., attempt: _Optional[int] = ...) -> None: ...

class GetLogsResponse(_message.Message):
    __slots__ = ("attempt", "phase", "output", "kept")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    phase: Phase
    output: bytes
    kept: bool
    def __init__(self, attempt: _Optional[int] = ..., phase: _Optional[_Union[Phase, str]] = ..., output: _Optional[bytes] = ..., kept: _Optional[bool] = ...) -> None: ...

class TraceRecord(_message.Message):
    __slots__ = ("key", "name", "output", "started_at", "duration", "attempt")
    KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    key: str
    name: str
    output: bytes
    started_at: float
    duration: float
    attempt: int
    def __init__(self, key: _Optional[str] = ..., name: _Optional[str] = ..., output: _Optional[bytes] = ..., started_at: _Optional[float] = ..., duration: _Optional[float] = ..., attempt: _Optional[int] = ...) -> None: ...

class RecordTracesRequest(_message.Message):
    __slots__ = ("run", "action", "records")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    run: str
    action: str
    records: _containers.RepeatedCompositeFieldContainer[TraceRecord]
    def __init__(self, run: _Optional[str] = ..., action: _Optional[str] = ..., records: _Optional[_Iterable[_Union[TraceRecord, _Mapping]]] = ...) -> None: ...

class RecordTracesResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTracesRequest(_message.Message):
    __slots__ = ("run", "action", "cursor")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    run: str
    action: str
    cursor: str
    def __init__(self, run: _Optional[str] = ..., action: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class ListTracesResponse(_message.Message):
    __slots__ = ("records", "next_cursor")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_CURSOR_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[TraceRecord]
    next_cursor: str
    def __init__(self, records: _Optional[_Iterable[_Union[TraceRecord, _Mapping]]] = ..., next_cursor: _Optional[str] = ...) -> None: ...

class PutReportRequest(_message.Message):
    __slots__ = ("run", "action", "html")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    run: str
    action: str
    html: bytes
    def __init__(self, run: _Optional[str] = ..., action: _Optional[str] = ..., html: _Optional[bytes] = ...) -> None: ...

class PutReportResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetReportRequest(_message.Message):
    __slots__ = ("run", "action")
    RUN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    run: str
    action: str
    def __init__(self, run: _Optional[str] = ..., action: _Optional[str] = ...) -> None: ...

class GetReportResponse(_message.Message):
    __slots__ = ("html", "kept")
    HTML_FIELD_NUMBER: _ClassVar[int]
    KEPT_FIELD_NUMBER: _ClassVar[int]
    html: bytes
    kept: bool
    def __init__(self, html: _Optional[bytes] = ..., kept: _Optional[bool] = ...) -> None: ...

class AbortRunRequest(_message.Message):
    __slots__ = ("run", "reason")
    RUN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run: str
    reason: str
    def __init__(self, run: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortRunResponse(_message.Message):
    __slots__ = ("aborted",)
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    aborted: int
    def __init__(self, aborted: _Optional[int] = ...) -> None: ...

class AbortActionRequest(_message.Message):
    __slots__ = ("run", "names", "reason")
    RUN_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run: str
    names: _containers.RepeatedScalarFieldContainer[str]
    reason: str
    def __init__(self, run: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., reason: _Optional[str] = ...) -> None: ...

class AbortActionResponse(_message.Message):
    __slots__ = ("aborted",)
    ABORTED_FIELD_NUMBER: _ClassVar[int]
    aborted: int
    def __init__(self, aborted: _Optional[int] = ...) -> None: ...

class GetQuotaRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Quota(_message.Message):
    __slots__ = ("tenant", "max_fanout", "max_concurrency", "max_queued", "max_payload_bytes", "running", "queued", "stored_bytes", "max_stored_bytes", "retention_seconds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_FANOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    max_fanout: int
    max_concurrency: int
    max_queued: int
    max_payload_bytes: int
    running: int
    queued: int
    stored_bytes: int
    max_stored_bytes: int
    retention_seconds: int
    def __init__(self, tenant: _Optional[str] = ..., max_fanout: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., max_queued: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., running: _Optional[int] = ..., queued: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ..., retention_seconds: _Optional[int] = ...) -> None: ...
