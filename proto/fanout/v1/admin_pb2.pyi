from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Limits(_message.Message):
    __slots__ = ("max_fanout", "max_concurrency", "max_queued", "max_payload_bytes", "max_stored_bytes", "retention_seconds")
    MAX_FANOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_fanout: int
    max_concurrency: int
    max_queued: int
    max_payload_bytes: int
    max_stored_bytes: int
    retention_seconds: int
    def __init__(self, max_fanout: _Optional[int] = ..., max_concurrency: _Optional[int] = ..., max_queued: _Optional[int] = ..., max_payload_bytes: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ..., retention_seconds: _Optional[int] = ...) -> None: ...

class CreateTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class CreateTenantResponse(_message.Message):
    __slots__ = ("tenant", "token", "token_id")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    token: str
    token_id: str
    def __init__(self, tenant: _Optional[str] = ..., token: _Optional[str] = ..., token_id: _Optional[str] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("role", "tenant", "name", "owner")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    role: str
    tenant: str
    name: str
    owner: str
    def __init__(self, role: _Optional[str] = ..., tenant: _Optional[str] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "token_id", "name")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    token: str
    token_id: str
    name: str
    def __init__(self, token: _Optional[str] = ..., token_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id", "name")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RotateTokenRequest(_message.Message):
    __slots__ = ("token_id", "name")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    name: str
    def __init__(self, token_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("revoked",)
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    revoked: bool
    def __init__(self, revoked: _Optional[bool] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class TokenInfo(_message.Message):
    __slots__ = ("id", "role", "tenant", "created_at", "name", "owner")
    ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    id: str
    role: str
    tenant: str
    created_at: float
    name: str
    owner: str
    def __init__(self, id: _Optional[str] = ..., role: _Optional[str] = ..., tenant: _Optional[str] = ..., created_at: _Optional[float] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[TokenInfo]
    def __init__(self, tokens: _Optional[_Iterable[_Union[TokenInfo, _Mapping]]] = ...) -> None: ...

class SetLimitsRequest(_message.Message):
    __slots__ = ("tenant", "limits", "reason", "until")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limits: Limits
    reason: str
    until: float
    def __init__(self, tenant: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., reason: _Optional[str] = ..., until: _Optional[float] = ...) -> None: ...

class GetLimitsRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class TenantLimits(_message.Message):
    __slots__ = ("tenant", "limits", "overrides", "temporary")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    TEMPORARY_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limits: Limits
    overrides: Limits
    temporary: _containers.RepeatedCompositeFieldContainer[TemporaryLimit]
    def __init__(self, tenant: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., overrides: _Optional[_Union[Limits, _Mapping]] = ..., temporary: _Optional[_Iterable[_Union[TemporaryLimit, _Mapping]]] = ...) -> None: ...

class TemporaryLimit(_message.Message):
    __slots__ = ("limit", "value", "restores", "until")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    RESTORES_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    limit: str
    value: int
    restores: int
    until: float
    def __init__(self, limit: _Optional[str] = ..., value: _Optional[int] = ..., restores: _Optional[int] = ..., until: _Optional[float] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("at", "actor", "tenant", "limit", "old_value", "new_value", "reason", "action", "subject")
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OLD_VALUE_FIELD_NUMBER: _ClassVar[int]
    NEW_VALUE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    at: float
    actor: str
    tenant: str
    limit: str
    old_value: int
    new_value: int
    reason: str
    action: str
    subject: str
    def __init__(self, at: _Optional[float] = ..., actor: _Optional[str] = ..., tenant: _Optional[str] = ..., limit: _Optional[str] = ..., old_value: _Optional[int] = ..., new_value: _Optional[int] = ..., reason: _Optional[str] = ..., action: _Optional[str] = ..., subject: _Optional[str] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("tenant", "limit", "actor", "since")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limit: int
    actor: str
    since: float
    def __init__(self, tenant: _Optional[str] = ..., limit: _Optional[int] = ..., actor: _Optional[str] = ..., since: _Optional[float] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ...) -> None: ...

class ListTenantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTenantsResponse(_message.Message):
    __slots__ = ("tenants",)
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenants: _Optional[_Iterable[str]] = ...) -> None: ...

class GetTenantRequest(_message.Message):
    __slots__ = ("tenant",)
    TENANT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    def __init__(self, tenant: _Optional[str] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tenant", "limits", "running", "queued", "stored_bytes", "near", "placement")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    NEAR_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    limits: Limits
    running: int
    queued: int
    stored_bytes: int
    near: _containers.RepeatedScalarFieldContainer[str]
    placement: str
    def __init__(self, tenant: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., running: _Optional[int] = ..., queued: _Optional[int] = ..., stored_bytes: _Optional[int] = ..., near: _Optional[_Iterable[str]] = ..., placement: _Optional[str] = ...) -> None: ...

class DeleteTenantRequest(_message.Message):
    __slots__ = ("tenant", "force", "reason")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    force: bool
    reason: str
    def __init__(self, tenant: _Optional[str] = ..., force: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class DeleteTenantResponse(_message.Message):
    __slots__ = ("tokens_revoked", "keys_deleted")
    TOKENS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    KEYS_DELETED_FIELD_NUMBER: _ClassVar[int]
    tokens_revoked: int
    keys_deleted: int
    def __init__(self, tokens_revoked: _Optional[int] = ..., keys_deleted: _Optional[int] = ...) -> None: ...

class ListQuotasRequest(_message.Message):
    __slots__ = ("after", "limit")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after: str
    limit: int
    def __init__(self, after: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListQuotasResponse(_message.Message):
    __slots__ = ("tenants", "next")
    TENANTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    tenants: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    next: str
    def __init__(self, tenants: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ..., next: _Optional[str] = ...) -> None: ...

class LimitRequest(_message.Message):
    __slots__ = ("id", "tenant", "requester", "limits", "reason", "state", "created_at", "decided_by", "decided_at", "decision_reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    requester: str
    limits: Limits
    reason: str
    state: str
    created_at: float
    decided_by: str
    decided_at: float
    decision_reason: str
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., requester: _Optional[str] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., reason: _Optional[str] = ..., state: _Optional[str] = ..., created_at: _Optional[float] = ..., decided_by: _Optional[str] = ..., decided_at: _Optional[float] = ..., decision_reason: _Optional[str] = ...) -> None: ...

class ListLimitRequestsRequest(_message.Message):
    __slots__ = ("tenant", "state")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    state: str
    def __init__(self, tenant: _Optional[str] = ..., state: _Optional[str] = ...) -> None: ...

class ListLimitRequestsResponse(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[LimitRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[LimitRequest, _Mapping]]] = ...) -> None: ...

class DecideLimitRequestRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RequestLimitRequest(_message.Message):
    __slots__ = ("limits", "reason")
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    limits: Limits
    reason: str
    def __init__(self, limits: _Optional[_Union[Limits, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class CheckFanoutRequest(_message.Message):
    __slots__ = ("fanout",)
    FANOUT_FIELD_NUMBER: _ClassVar[int]
    fanout: int
    def __init__(self, fanout: _Optional[int] = ...) -> None: ...

class CheckFanoutResponse(_message.Message):
    __slots__ = ("admitted", "limit", "headroom", "max_fanout", "queued", "max_queued")
    ADMITTED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    HEADROOM_FIELD_NUMBER: _ClassVar[int]
    MAX_FANOUT_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FIELD_NUMBER: _ClassVar[int]
    admitted: bool
    limit: str
    headroom: int
    max_fanout: int
    queued: int
    max_queued: int
    def __init__(self, admitted: _Optional[bool] = ..., limit: _Optional[str] = ..., headroom: _Optional[int] = ..., max_fanout: _Optional[int] = ..., queued: _Optional[int] = ..., max_queued: _Optional[int] = ...) -> None: ...

class SetPlacementRequest(_message.Message):
    __slots__ = ("tenant", "placement", "reason")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    placement: str
    reason: str
    def __init__(self, tenant: _Optional[str] = ..., placement: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class TenantPlacement(_message.Message):
    __slots__ = ("tenant", "placement")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    placement: str
    def __init__(self, tenant: _Optional[str] = ..., placement: _Optional[str] = ...) -> None: ...
