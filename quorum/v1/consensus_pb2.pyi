import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quorum.v1 import common_pb2 as _common_pb2
from quorum.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListReviewTasksRequest(_message.Message):
    __slots__ = ("job_id", "page_size")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ...) -> None: ...

class ReviewTask(_message.Message):
    __slots__ = ("task_id", "job_id", "item_id", "object_name", "labels", "answers", "suggested_label", "confidence")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    job_id: str
    item_id: str
    object_name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    answers: _containers.RepeatedCompositeFieldContainer[_events_pb2.WorkerAnswer]
    suggested_label: _common_pb2.Answer
    confidence: float
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., item_id: _Optional[str] = ..., object_name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., answers: _Optional[_Iterable[_Union[_events_pb2.WorkerAnswer, _Mapping]]] = ..., suggested_label: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., confidence: _Optional[float] = ...) -> None: ...

class ListReviewTasksResponse(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[ReviewTask]
    def __init__(self, tasks: _Optional[_Iterable[_Union[ReviewTask, _Mapping]]] = ...) -> None: ...

class SubmitReviewRequest(_message.Message):
    __slots__ = ("task_id", "reviewer_id", "label")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    REVIEWER_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    reviewer_id: str
    label: _common_pb2.Answer
    def __init__(self, task_id: _Optional[str] = ..., reviewer_id: _Optional[str] = ..., label: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ...) -> None: ...

class GetResultRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class TaskResult(_message.Message):
    __slots__ = ("task_id", "job_id", "item_id", "object_name", "label", "confidence", "low_confidence", "majority_label", "answers", "resolved_at", "version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECT_NAME_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    MAJORITY_LABEL_FIELD_NUMBER: _ClassVar[int]
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
    majority_label: _common_pb2.Answer
    answers: _containers.RepeatedCompositeFieldContainer[_events_pb2.WorkerAnswer]
    resolved_at: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, task_id: _Optional[str] = ..., job_id: _Optional[str] = ..., item_id: _Optional[str] = ..., object_name: _Optional[str] = ..., label: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., confidence: _Optional[float] = ..., low_confidence: _Optional[bool] = ..., majority_label: _Optional[_Union[_common_pb2.Answer, _Mapping]] = ..., answers: _Optional[_Iterable[_Union[_events_pb2.WorkerAnswer, _Mapping]]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class ExportResultsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetJobQualityRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class JobQuality(_message.Message):
    __slots__ = ("tasks", "resolved", "low_confidence", "answers", "agreement", "gold_accuracy", "gold_answers", "estimated_accuracy", "mean_confidence", "ttr_p50_seconds", "ttr_p90_seconds", "ttr_p99_seconds", "resolved_per_minute", "krippendorff_alpha", "fleiss_kappa")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    LOW_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    GOLD_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MEAN_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    TTR_P50_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTR_P90_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TTR_P99_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    KRIPPENDORFF_ALPHA_FIELD_NUMBER: _ClassVar[int]
    FLEISS_KAPPA_FIELD_NUMBER: _ClassVar[int]
    tasks: int
    resolved: int
    low_confidence: int
    answers: int
    agreement: float
    gold_accuracy: float
    gold_answers: int
    estimated_accuracy: float
    mean_confidence: float
    ttr_p50_seconds: float
    ttr_p90_seconds: float
    ttr_p99_seconds: float
    resolved_per_minute: _containers.RepeatedCompositeFieldContainer[_common_pb2.MinuteCount]
    krippendorff_alpha: float
    fleiss_kappa: float
    def __init__(self, tasks: _Optional[int] = ..., resolved: _Optional[int] = ..., low_confidence: _Optional[int] = ..., answers: _Optional[int] = ..., agreement: _Optional[float] = ..., gold_accuracy: _Optional[float] = ..., gold_answers: _Optional[int] = ..., estimated_accuracy: _Optional[float] = ..., mean_confidence: _Optional[float] = ..., ttr_p50_seconds: _Optional[float] = ..., ttr_p90_seconds: _Optional[float] = ..., ttr_p99_seconds: _Optional[float] = ..., resolved_per_minute: _Optional[_Iterable[_Union[_common_pb2.MinuteCount, _Mapping]]] = ..., krippendorff_alpha: _Optional[float] = ..., fleiss_kappa: _Optional[float] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WorkerQuality(_message.Message):
    __slots__ = ("worker_id", "answers", "gold_answers", "gold_correct", "reliability", "agreement", "spam_score", "spammer", "labels", "confusion")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    GOLD_CORRECT_FIELD_NUMBER: _ClassVar[int]
    RELIABILITY_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    SPAM_SCORE_FIELD_NUMBER: _ClassVar[int]
    SPAMMER_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    answers: int
    gold_answers: int
    gold_correct: int
    reliability: float
    agreement: float
    spam_score: float
    spammer: bool
    labels: _containers.RepeatedScalarFieldContainer[str]
    confusion: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, worker_id: _Optional[str] = ..., answers: _Optional[int] = ..., gold_answers: _Optional[int] = ..., gold_correct: _Optional[int] = ..., reliability: _Optional[float] = ..., agreement: _Optional[float] = ..., spam_score: _Optional[float] = ..., spammer: _Optional[bool] = ..., labels: _Optional[_Iterable[str]] = ..., confusion: _Optional[_Iterable[float]] = ...) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "spam_threshold")
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    SPAM_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[WorkerQuality]
    spam_threshold: float
    def __init__(self, workers: _Optional[_Iterable[_Union[WorkerQuality, _Mapping]]] = ..., spam_threshold: _Optional[float] = ...) -> None: ...
