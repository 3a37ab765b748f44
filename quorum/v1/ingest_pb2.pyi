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

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_OPEN: _ClassVar[JobState]
    JOB_STATE_SEALED: _ClassVar[JobState]
    JOB_STATE_DELETED: _ClassVar[JobState]

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_ACCEPTED: _ClassVar[ItemStatus]
    ITEM_STATUS_DUPLICATE: _ClassVar[ItemStatus]
    ITEM_STATUS_REJECTED: _ClassVar[ItemStatus]

class ManifestFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MANIFEST_FORMAT_UNSPECIFIED: _ClassVar[ManifestFormat]
    MANIFEST_FORMAT_JSONL: _ClassVar[ManifestFormat]
    MANIFEST_FORMAT_CSV: _ClassVar[ManifestFormat]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_OPEN: JobState
JOB_STATE_SEALED: JobState
JOB_STATE_DELETED: JobState
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_ACCEPTED: ItemStatus
ITEM_STATUS_DUPLICATE: ItemStatus
ITEM_STATUS_REJECTED: ItemStatus
MANIFEST_FORMAT_UNSPECIFIED: ManifestFormat
MANIFEST_FORMAT_JSONL: ManifestFormat
MANIFEST_FORMAT_CSV: ManifestFormat

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "objects", "gold_objects", "rejected", "created_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    GOLD_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: _common_pb2.JobSpec
    state: JobState
    objects: int
    gold_objects: int
    rejected: int
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., objects: _Optional[int] = ..., gold_objects: _Optional[int] = ..., rejected: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("spec", "idempotency_key")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.JobSpec
    idempotency_key: str
    def __init__(self, spec: _Optional[_Union[_common_pb2.JobSpec, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("client_id",)
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    def __init__(self, client_id: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("job_id", "filename", "data", "end_of_file", "gold_label")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    END_OF_FILE_FIELD_NUMBER: _ClassVar[int]
    GOLD_LABEL_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    filename: str
    data: bytes
    end_of_file: bool
    gold_label: str
    def __init__(self, job_id: _Optional[str] = ..., filename: _Optional[str] = ..., data: _Optional[bytes] = ..., end_of_file: _Optional[bool] = ..., gold_label: _Optional[str] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("name", "status", "item_id", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    status: ItemStatus
    item_id: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., item_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class UploadSummary(_message.Message):
    __slots__ = ("job_id", "accepted", "duplicates", "rejected", "items")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    accepted: int
    duplicates: int
    rejected: int
    items: _containers.RepeatedCompositeFieldContainer[ItemResult]
    def __init__(self, job_id: _Optional[str] = ..., accepted: _Optional[int] = ..., duplicates: _Optional[int] = ..., rejected: _Optional[int] = ..., items: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ...) -> None: ...

class ImportManifestRequest(_message.Message):
    __slots__ = ("job_id", "format", "content", "base_dir")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    BASE_DIR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    format: ManifestFormat
    content: bytes
    base_dir: str
    def __init__(self, job_id: _Optional[str] = ..., format: _Optional[_Union[ManifestFormat, str]] = ..., content: _Optional[bytes] = ..., base_dir: _Optional[str] = ...) -> None: ...

class SealJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class DeleteJobResponse(_message.Message):
    __slots__ = ("job_id", "items_deleted", "objects_deleted")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ITEMS_DELETED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    items_deleted: int
    objects_deleted: int
    def __init__(self, job_id: _Optional[str] = ..., items_deleted: _Optional[int] = ..., objects_deleted: _Optional[int] = ...) -> None: ...

class SetJobSlaRequest(_message.Message):
    __slots__ = ("job_id", "sla_deadline", "clear_deadline")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SLA_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    CLEAR_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sla_deadline: _timestamp_pb2.Timestamp
    clear_deadline: bool
    def __init__(self, job_id: _Optional[str] = ..., sla_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., clear_deadline: _Optional[bool] = ...) -> None: ...
