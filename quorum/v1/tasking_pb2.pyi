import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quorum.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSessionRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "worker_id", "started_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    worker_id: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetNextTaskRequest(_message.Message):
    __slots__ = ("session_id", "job_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    job_id: str
    def __init__(self, session_id: _Optional[str] = ..., job_id: _Optional[str] = ...) -> None: ...

class TaskContent(_message.Message):
    __slots__ = ("content_type", "text", "data")
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    content_type: str
    text: str
    data: bytes
    def __init__(self, content_type: _Optional[str] = ..., text: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class WorkerTask(_message.Message):
    __slots__ = ("task_id", "lease_id", "job_id", "instructions", "image_classification", "text_classification", "multi_label_classification", "bounding_boxes", "keypoints", "segmentation", "ner_spans", "transcription", "pairwise_comparison", "content", "lease_expires_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_BOXES_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    NER_SPANS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_COMPARISON_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    lease_id: str
    job_id: str
    instructions: str
    image_classification: _common_pb2.ClassificationConfig
    text_classification: _common_pb2.ClassificationConfig
    multi_label_classification: _common_pb2.MultiLabelConfig
    bounding_boxes: _common_pb2.BoundingBoxConfig
    keypoints: _common_pb2.KeypointsConfig
    segmentation: _common_pb2.SegmentationConfig
    ner_spans: _common_pb2.SpansConfig
    transcription: _common_pb2.TranscriptionConfig
    pairwise_comparison: _common_pb2.PairwiseConfig
    content: TaskContent
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., job_id: _Optional[str] = ..., instructions: _Optional[str] = ..., image_classification: _Optional[_Union[_common_pb2.ClassificationConfig, _Mapping]] = ..., text_classification: _Optional[_Union[_common_pb2.ClassificationConfig, _Mapping]] = ..., multi_label_classification: _Optional[_Union[_common_pb2.MultiLabelConfig, _Mapping]] = ..., bounding_boxes: _Optional[_Union[_common_pb2.BoundingBoxConfig, _Mapping]] = ..., keypoints: _Optional[_Union[_common_pb2.KeypointsConfig, _Mapping]] = ..., segmentation: _Optional[_Union[_common_pb2.SegmentationConfig, _Mapping]] = ..., ner_spans: _Optional[_Union[_common_pb2.SpansConfig, _Mapping]] = ..., transcription: _Optional[_Union[_common_pb2.TranscriptionConfig, _Mapping]] = ..., pairwise_comparison: _Optional[_Union[_common_pb2.PairwiseConfig, _Mapping]] = ..., content: _Optional[_Union[TaskContent, _Mapping]] = ..., lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetNextTaskResponse(_message.Message):
    __slots__ = ("task", "retry_after_ms")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    task: WorkerTask
    retry_after_ms: int
    def __init__(self, task: _Optional[_Union[WorkerTask, _Mapping]] = ..., retry_after_ms: _Optional[int] = ...) -> None: ...

class SubmitAnswerRequest(_message.Message):
    __slots__ = ("session_id", "lease_id", "answer")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    lease_id: str
    answer: _common_pb2.Answer
    def __init__(self, session_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., answer: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ...) -> None: ...

class SubmitAnswerResponse(_message.Message):
    __slots__ = ("answer_id",)
    ANSWER_ID_FIELD_NUMBER: _ClassVar[int]
    answer_id: str
    def __init__(self, answer_id: _Optional[str] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("session_id", "lease_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    lease_id: str
    def __init__(self, session_id: _Optional[str] = ..., lease_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease_expires_at",)
    LEASE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    lease_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, lease_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SkipTaskRequest(_message.Message):
    __slots__ = ("session_id", "lease_id", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    lease_id: str
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., lease_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class SkipTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetTaskingStatsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class TaskingStats(_message.Message):
    __slots__ = ("tasks", "gold_tasks", "backlog", "answers", "active_leases", "workers", "created_per_minute", "answered_per_minute")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    GOLD_TASKS_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_LEASES_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    CREATED_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    tasks: int
    gold_tasks: int
    backlog: int
    answers: int
    active_leases: int
    workers: int
    created_per_minute: _containers.RepeatedCompositeFieldContainer[_common_pb2.MinuteCount]
    answered_per_minute: _containers.RepeatedCompositeFieldContainer[_common_pb2.MinuteCount]
    def __init__(self, tasks: _Optional[int] = ..., gold_tasks: _Optional[int] = ..., backlog: _Optional[int] = ..., answers: _Optional[int] = ..., active_leases: _Optional[int] = ..., workers: _Optional[int] = ..., created_per_minute: _Optional[_Iterable[_Union[_common_pb2.MinuteCount, _Mapping]]] = ..., answered_per_minute: _Optional[_Iterable[_Union[_common_pb2.MinuteCount, _Mapping]]] = ...) -> None: ...

class SuspendWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReinstateWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetWorkerStatusRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class WorkerStatus(_message.Message):
    __slots__ = ("worker_id", "suspended", "reason", "suspended_by_operator", "suspension_reason", "spam_flagged", "spam_reason", "flag_overridden", "changed_by", "changed_at")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_BY_OPERATOR_FIELD_NUMBER: _ClassVar[int]
    SUSPENSION_REASON_FIELD_NUMBER: _ClassVar[int]
    SPAM_FLAGGED_FIELD_NUMBER: _ClassVar[int]
    SPAM_REASON_FIELD_NUMBER: _ClassVar[int]
    FLAG_OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    CHANGED_BY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_AT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    suspended: bool
    reason: str
    suspended_by_operator: bool
    suspension_reason: str
    spam_flagged: bool
    spam_reason: str
    flag_overridden: bool
    changed_by: str
    changed_at: _timestamp_pb2.Timestamp
    def __init__(self, worker_id: _Optional[str] = ..., suspended: _Optional[bool] = ..., reason: _Optional[str] = ..., suspended_by_operator: _Optional[bool] = ..., suspension_reason: _Optional[str] = ..., spam_flagged: _Optional[bool] = ..., spam_reason: _Optional[str] = ..., flag_overridden: _Optional[bool] = ..., changed_by: _Optional[str] = ..., changed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkerStatusesRequest(_message.Message):
    __slots__ = ("suspended_only", "page_size", "page_token")
    SUSPENDED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    suspended_only: bool
    page_size: int
    page_token: str
    def __init__(self, suspended_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListWorkerStatusesResponse(_message.Message):
    __slots__ = ("workers", "next_page_token")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerStatus]
    next_page_token: str
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerStatus, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
