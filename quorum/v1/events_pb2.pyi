import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quorum.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GoldGrade(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GOLD_GRADE_UNSPECIFIED: _ClassVar[GoldGrade]
    GOLD_GRADE_CORRECT: _ClassVar[GoldGrade]
    GOLD_GRADE_WRONG: _ClassVar[GoldGrade]
GOLD_GRADE_UNSPECIFIED: GoldGrade
GOLD_GRADE_CORRECT: GoldGrade
GOLD_GRADE_WRONG: GoldGrade

class Event(_message.Message):
    __slots__ = ("event_id", "occurred_at", "job_created", "job_sealed", "task_created", "answer_accepted", "more_answers_requested", "task_resolved", "job_paused", "job_resumed", "worker_flagged", "audit_recorded", "job_deleted")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    JOB_CREATED_FIELD_NUMBER: _ClassVar[int]
    JOB_SEALED_FIELD_NUMBER: _ClassVar[int]
    TASK_CREATED_FIELD_NUMBER: _ClassVar[int]
    ANSWER_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MORE_ANSWERS_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    TASK_RESOLVED_FIELD_NUMBER: _ClassVar[int]
    JOB_PAUSED_FIELD_NUMBER: _ClassVar[int]
    JOB_RESUMED_FIELD_NUMBER: _ClassVar[int]
    WORKER_FLAGGED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_RECORDED_FIELD_NUMBER: _ClassVar[int]
    JOB_DELETED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    job_created: JobCreated
    job_sealed: JobSealed
    task_created: TaskCreated
    answer_accepted: AnswerAccepted
    more_answers_requested: MoreAnswersRequested
    task_resolved: TaskResolved
    job_paused: JobPaused
    job_resumed: JobResumed
    worker_flagged: WorkerFlagged
    audit_recorded: AuditRecorded
    job_deleted: JobDeleted
    def __init__(self, event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_created: _Optional[_Union[JobCreated, _Mapping]] = ..., job_sealed: _Optional[_Union[JobSealed, _Mapping]] = ..., task_created: _Optional[_Union[TaskCreated, _Mapping]] = ..., answer_accepted: _Optional[_Union[AnswerAccepted, _Mapping]] = ..., more_answers_requested: _Optional[_Union[MoreAnswersRequested, _Mapping]] = ..., task_resolved: _Optional[_Union[TaskResolved, _Mapping]] = ..., job_paused: _Optional[_Union[JobPaused, _Mapping]] = ..., job_resumed: _Optional[_Union[JobResumed, _Mapping]] = ..., worker_flagged: _Optional[_Union[WorkerFlagged, _Mapping]] = ..., audit_recorded: _Optional[_Union[AuditRecorded, _Mapping]] = ..., job_deleted: _Optional[_Union[JobDeleted, _Mapping]] = ...) -> None: ...

class JobCreated(_message.Message):
    __slots__ = ("job_id", "spec", "created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: _common_pb2.JobSpec
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.JobSpec, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class JobSealed(_message.Message):
    __slots__ = ("job_id", "objects", "gold_objects")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    GOLD_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    objects: int
    gold_objects: int
    def __init__(self, job_id: _Optional[str] = ..., objects: _Optional[int] = ..., gold_objects: _Optional[int] = ...) -> None: ...

class TaskCreated(_message.Message):
    __slots__ = ("task_id", "job_id", "item_id", "object_name", "object_key", "content_type", "text", "gold", "gold_answer", "created_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    OBJECT_KEY_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    GOLD_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    item_id: str
    object_name: str
    object_key: str
    content_type: str
    text: str
    gold: bool
    gold_answer: _common_pb2.Answer
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., item_id: _Optional[str] = ..., object_name: _Optional[str] = ..., object_key: _Optional[str] = ..., content_type: _Optional[str] = ..., text: _Optional[str] = ..., gold: _Optional[bool] = ..., gold_answer: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AnswerAccepted(_message.Message):
    __slots__ = ("answer_id", "task_id", "job_id", "worker_id", "answer", "gold", "leased_at", "submitted_at", "active_ms", "gold_grade")
    ANSWER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    GOLD_FIELD_NUMBER: _ClassVar[int]
    LEASED_AT_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MS_FIELD_NUMBER: _ClassVar[int]
    GOLD_GRADE_FIELD_NUMBER: _ClassVar[int]
    answer_id: str
    task_id: str
    job_id: str
    worker_id: str
    answer: _common_pb2.Answer
    gold: bool
    leased_at: _timestamp_pb2.Timestamp
    submitted_at: _timestamp_pb2.Timestamp
    active_ms: int
    gold_grade: GoldGrade
    def __init__(self, answer_id: _Optional[str] = ..., task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., answer: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., gold: _Optional[bool] = ..., leased_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., submitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., active_ms: _Optional[int] = ..., gold_grade: _Optional[_Union[GoldGrade, str]] = ...) -> None: ...

class JobPaused(_message.Message):
    __slots__ = ("job_id", "reason", "charged_cents", "budget_cap_cents")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CHARGED_CENTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_CENTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    reason: str
    charged_cents: int
    budget_cap_cents: int
    def __init__(self, job_id: _Optional[str] = ..., reason: _Optional[str] = ..., charged_cents: _Optional[int] = ..., budget_cap_cents: _Optional[int] = ...) -> None: ...

class JobResumed(_message.Message):
    __slots__ = ("job_id", "budget_cap_cents")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_CENTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    budget_cap_cents: int
    def __init__(self, job_id: _Optional[str] = ..., budget_cap_cents: _Optional[int] = ...) -> None: ...

class MoreAnswersRequested(_message.Message):
    __slots__ = ("task_id", "job_id", "answers_wanted")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_WANTED_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    answers_wanted: int
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., answers_wanted: _Optional[int] = ...) -> None: ...

class WorkerAnswer(_message.Message):
    __slots__ = ("worker_id", "answer", "weight", "agreed")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    AGREED_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    answer: _common_pb2.Answer
    weight: float
    agreed: bool
    def __init__(self, worker_id: _Optional[str] = ..., answer: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., weight: _Optional[float] = ..., agreed: _Optional[bool] = ...) -> None: ...

class TaskResolved(_message.Message):
    __slots__ = ("task_id", "job_id", "item_id", "object_name", "label", "confidence", "low_confidence", "answers", "resolved_at", "version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    item_id: str
    object_name: str
    label: _common_pb2.Answer
    confidence: float
    low_confidence: bool
    answers: _containers.RepeatedCompositeFieldContainer[WorkerAnswer]
    resolved_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., item_id: _Optional[str] = ..., object_name: _Optional[str] = ..., label: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., confidence: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., answers: _Optional[_Iterable[_Union[WorkerAnswer, _Mapping]]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class WorkerFlagged(_message.Message):
    __slots__ = ("worker_id", "spammer", "spam_score", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SPAMMER_FIELD_NUMBER: _ClassVar[int]
    SPAM_SCORE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    spammer: bool
    spam_score: float
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., spammer: _Optional[bool] = ..., spam_score: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class AuditRecorded(_message.Message):
    __slots__ = ("actor", "actor_key_id", "action", "resource", "org_id", "details_json")
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTOR_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    actor: str
    actor_key_id: str
    action: str
    resource: str
    org_id: str
    details_json: str
    def __init__(self, actor: _Optional[str] = ..., actor_key_id: _Optional[str] = ..., action: _Optional[str] = ..., resource: _Optional[str] = ..., org_id: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class JobDeleted(_message.Message):
    __slots__ = ("job_id", "org_id")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    org_id: str
    def __init__(self, job_id: _Optional[str] = ..., org_id: _Optional[str] = ...) -> None: ...
