import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PriceMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRICE_MODE_UNSPECIFIED: _ClassVar[PriceMode]
    PRICE_MODE_PER_OBJECT: _ClassVar[PriceMode]
    PRICE_MODE_PER_HOUR: _ClassVar[PriceMode]

class PayMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAY_MODE_UNSPECIFIED: _ClassVar[PayMode]
    PAY_MODE_PER_ANSWER: _ClassVar[PayMode]
    PAY_MODE_PER_HOUR: _ClassVar[PayMode]
PRICE_MODE_UNSPECIFIED: PriceMode
PRICE_MODE_PER_OBJECT: PriceMode
PRICE_MODE_PER_HOUR: PriceMode
PAY_MODE_UNSPECIFIED: PayMode
PAY_MODE_PER_ANSWER: PayMode
PAY_MODE_PER_HOUR: PayMode

class Overlap(_message.Message):
    __slots__ = ("min", "max")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    min: int
    max: int
    def __init__(self, min: _Optional[int] = ..., max: _Optional[int] = ...) -> None: ...

class ClassificationConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "client_id", "image_classification", "text_classification", "instructions", "overlap", "target_confidence", "gold_share", "price_per_object_cents", "pay_per_answer_cents", "currency", "pilot", "pilot_allowance", "sla_deadline", "lease_seconds", "price_mode", "price_per_hour_cents", "pay_mode", "pay_per_hour_cents", "budget_cap_cents", "expert_review", "gold_bonus_cents", "gold_bonus_threshold", "gold_bonus_min_answers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    TARGET_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    GOLD_SHARE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_OBJECT_CENTS_FIELD_NUMBER: _ClassVar[int]
    PAY_PER_ANSWER_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PILOT_FIELD_NUMBER: _ClassVar[int]
    PILOT_ALLOWANCE_FIELD_NUMBER: _ClassVar[int]
    SLA_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PRICE_MODE_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_HOUR_CENTS_FIELD_NUMBER: _ClassVar[int]
    PAY_MODE_FIELD_NUMBER: _ClassVar[int]
    PAY_PER_HOUR_CENTS_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_CENTS_FIELD_NUMBER: _ClassVar[int]
    EXPERT_REVIEW_FIELD_NUMBER: _ClassVar[int]
    GOLD_BONUS_CENTS_FIELD_NUMBER: _ClassVar[int]
    GOLD_BONUS_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    GOLD_BONUS_MIN_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    client_id: str
    image_classification: ClassificationConfig
    text_classification: ClassificationConfig
    instructions: str
    overlap: Overlap
    target_confidence: float
    gold_share: float
    price_per_object_cents: int
    pay_per_answer_cents: int
    currency: str
    pilot: bool
    pilot_allowance: int
    sla_deadline: _timestamp_pb2.Timestamp
    lease_seconds: int
    price_mode: PriceMode
    price_per_hour_cents: int
    pay_mode: PayMode
    pay_per_hour_cents: int
    budget_cap_cents: int
    expert_review: bool
    gold_bonus_cents: int
    gold_bonus_threshold: float
    gold_bonus_min_answers: int
    def __init__(self, name: _Optional[str] = ..., client_id: _Optional[str] = ..., image_classification: _Optional[_Union[ClassificationConfig, _Mapping]] = ..., text_classification: _Optional[_Union[ClassificationConfig, _Mapping]] = ..., instructions: _Optional[str] = ..., overlap: _Optional[_Union[Overlap, _Mapping]] = ..., target_confidence: _Optional[float] = ..., gold_share: _Optional[float] = ..., price_per_object_cents: _Optional[int] = ..., pay_per_answer_cents: _Optional[int] = ..., currency: _Optional[str] = ..., pilot: _Optional[bool] = ..., pilot_allowance: _Optional[int] = ..., sla_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_seconds: _Optional[int] = ..., price_mode: _Optional[_Union[PriceMode, str]] = ..., price_per_hour_cents: _Optional[int] = ..., pay_mode: _Optional[_Union[PayMode, str]] = ..., pay_per_hour_cents: _Optional[int] = ..., budget_cap_cents: _Optional[int] = ..., expert_review: _Optional[bool] = ..., gold_bonus_cents: _Optional[int] = ..., gold_bonus_threshold: _Optional[float] = ..., gold_bonus_min_answers: _Optional[int] = ...) -> None: ...

class ClassificationAnswer(_message.Message):
    __slots__ = ("label",)
    LABEL_FIELD_NUMBER: _ClassVar[int]
    label: str
    def __init__(self, label: _Optional[str] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("classification",)
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    classification: ClassificationAnswer
    def __init__(self, classification: _Optional[_Union[ClassificationAnswer, _Mapping]] = ...) -> None: ...

class MinuteCount(_message.Message):
    __slots__ = ("minute", "count")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    minute: int
    count: int
    def __init__(self, minute: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
