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

class MultiLabelConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class BoundingBoxConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class KeypointsConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class SegmentationConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class SpansConfig(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, labels: _Optional[_Iterable[str]] = ...) -> None: ...

class TranscriptionConfig(_message.Message):
    __slots__ = ("max_chars",)
    MAX_CHARS_FIELD_NUMBER: _ClassVar[int]
    max_chars: int
    def __init__(self, max_chars: _Optional[int] = ...) -> None: ...

class PairwiseConfig(_message.Message):
    __slots__ = ("question", "allow_tie")
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ALLOW_TIE_FIELD_NUMBER: _ClassVar[int]
    question: str
    allow_tie: bool
    def __init__(self, question: _Optional[str] = ..., allow_tie: _Optional[bool] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("name", "client_id", "image_classification", "text_classification", "multi_label_classification", "bounding_boxes", "keypoints", "segmentation", "ner_spans", "transcription", "pairwise_comparison", "instructions", "overlap", "target_confidence", "gold_share", "price_per_object_cents", "pay_per_answer_cents", "currency", "pilot", "pilot_allowance", "sla_deadline", "lease_seconds", "price_mode", "price_per_hour_cents", "pay_mode", "pay_per_hour_cents", "budget_cap_cents", "expert_review", "gold_bonus_cents", "gold_bonus_threshold", "gold_bonus_min_answers", "price_per_annotation_cents")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    BOUNDING_BOXES_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    SEGMENTATION_FIELD_NUMBER: _ClassVar[int]
    NER_SPANS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_COMPARISON_FIELD_NUMBER: _ClassVar[int]
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
    PRICE_PER_ANNOTATION_CENTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    client_id: str
    image_classification: ClassificationConfig
    text_classification: ClassificationConfig
    multi_label_classification: MultiLabelConfig
    bounding_boxes: BoundingBoxConfig
    keypoints: KeypointsConfig
    segmentation: SegmentationConfig
    ner_spans: SpansConfig
    transcription: TranscriptionConfig
    pairwise_comparison: PairwiseConfig
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
    price_per_annotation_cents: int
    def __init__(self, name: _Optional[str] = ..., client_id: _Optional[str] = ..., image_classification: _Optional[_Union[ClassificationConfig, _Mapping]] = ..., text_classification: _Optional[_Union[ClassificationConfig, _Mapping]] = ..., multi_label_classification: _Optional[_Union[MultiLabelConfig, _Mapping]] = ..., bounding_boxes: _Optional[_Union[BoundingBoxConfig, _Mapping]] = ..., keypoints: _Optional[_Union[KeypointsConfig, _Mapping]] = ..., segmentation: _Optional[_Union[SegmentationConfig, _Mapping]] = ..., ner_spans: _Optional[_Union[SpansConfig, _Mapping]] = ..., transcription: _Optional[_Union[TranscriptionConfig, _Mapping]] = ..., pairwise_comparison: _Optional[_Union[PairwiseConfig, _Mapping]] = ..., instructions: _Optional[str] = ..., overlap: _Optional[_Union[Overlap, _Mapping]] = ..., target_confidence: _Optional[float] = ..., gold_share: _Optional[float] = ..., price_per_object_cents: _Optional[int] = ..., pay_per_answer_cents: _Optional[int] = ..., currency: _Optional[str] = ..., pilot: _Optional[bool] = ..., pilot_allowance: _Optional[int] = ..., sla_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lease_seconds: _Optional[int] = ..., price_mode: _Optional[_Union[PriceMode, str]] = ..., price_per_hour_cents: _Optional[int] = ..., pay_mode: _Optional[_Union[PayMode, str]] = ..., pay_per_hour_cents: _Optional[int] = ..., budget_cap_cents: _Optional[int] = ..., expert_review: _Optional[bool] = ..., gold_bonus_cents: _Optional[int] = ..., gold_bonus_threshold: _Optional[float] = ..., gold_bonus_min_answers: _Optional[int] = ..., price_per_annotation_cents: _Optional[int] = ...) -> None: ...

class ClassificationAnswer(_message.Message):
    __slots__ = ("label",)
    LABEL_FIELD_NUMBER: _ClassVar[int]
    label: str
    def __init__(self, label: _Optional[str] = ...) -> None: ...

class MultiLabelAnswer(_message.Message):
    __slots__ = ("labels", "confidences")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCES_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedScalarFieldContainer[str]
    confidences: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, labels: _Optional[_Iterable[str]] = ..., confidences: _Optional[_Iterable[float]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("label", "x", "y", "w", "h", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    H_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    x: float
    y: float
    w: float
    h: float
    confidence: float
    def __init__(self, label: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., w: _Optional[float] = ..., h: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class BoxesAnswer(_message.Message):
    __slots__ = ("boxes",)
    BOXES_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    def __init__(self, boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ...) -> None: ...

class Keypoint(_message.Message):
    __slots__ = ("label", "x", "y", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    x: float
    y: float
    confidence: float
    def __init__(self, label: _Optional[str] = ..., x: _Optional[float] = ..., y: _Optional[float] = ..., confidence: _Optional[float] = ...) -> None: ...

class KeypointsAnswer(_message.Message):
    __slots__ = ("points",)
    POINTS_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[Keypoint]
    def __init__(self, points: _Optional[_Iterable[_Union[Keypoint, _Mapping]]] = ...) -> None: ...

class Point(_message.Message):
    __slots__ = ("x", "y")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ...) -> None: ...

class Polygon(_message.Message):
    __slots__ = ("label", "points", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    points: _containers.RepeatedCompositeFieldContainer[Point]
    confidence: float
    def __init__(self, label: _Optional[str] = ..., points: _Optional[_Iterable[_Union[Point, _Mapping]]] = ..., confidence: _Optional[float] = ...) -> None: ...

class PolygonsAnswer(_message.Message):
    __slots__ = ("polygons",)
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    polygons: _containers.RepeatedCompositeFieldContainer[Polygon]
    def __init__(self, polygons: _Optional[_Iterable[_Union[Polygon, _Mapping]]] = ...) -> None: ...

class Mask(_message.Message):
    __slots__ = ("label", "width", "height", "counts", "confidence")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    label: str
    width: int
    height: int
    counts: _containers.RepeatedScalarFieldContainer[int]
    confidence: float
    def __init__(self, label: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., counts: _Optional[_Iterable[int]] = ..., confidence: _Optional[float] = ...) -> None: ...

class MasksAnswer(_message.Message):
    __slots__ = ("masks",)
    MASKS_FIELD_NUMBER: _ClassVar[int]
    masks: _containers.RepeatedCompositeFieldContainer[Mask]
    def __init__(self, masks: _Optional[_Iterable[_Union[Mask, _Mapping]]] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("start", "end", "label", "confidence")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    label: str
    confidence: float
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ..., label: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class SpansAnswer(_message.Message):
    __slots__ = ("spans",)
    SPANS_FIELD_NUMBER: _ClassVar[int]
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    def __init__(self, spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ...) -> None: ...

class TranscriptionAnswer(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class PairwiseAnswer(_message.Message):
    __slots__ = ("winner", "a_wins")
    WINNER_FIELD_NUMBER: _ClassVar[int]
    A_WINS_FIELD_NUMBER: _ClassVar[int]
    winner: str
    a_wins: float
    def __init__(self, winner: _Optional[str] = ..., a_wins: _Optional[float] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("classification", "multi_label", "boxes", "keypoints", "polygons", "masks", "spans", "transcription", "pairwise")
    CLASSIFICATION_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    BOXES_FIELD_NUMBER: _ClassVar[int]
    KEYPOINTS_FIELD_NUMBER: _ClassVar[int]
    POLYGONS_FIELD_NUMBER: _ClassVar[int]
    MASKS_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_FIELD_NUMBER: _ClassVar[int]
    classification: ClassificationAnswer
    multi_label: MultiLabelAnswer
    boxes: BoxesAnswer
    keypoints: KeypointsAnswer
    polygons: PolygonsAnswer
    masks: MasksAnswer
    spans: SpansAnswer
    transcription: TranscriptionAnswer
    pairwise: PairwiseAnswer
    def __init__(self, classification: _Optional[_Union[ClassificationAnswer, _Mapping]] = ..., multi_label: _Optional[_Union[MultiLabelAnswer, _Mapping]] = ..., boxes: _Optional[_Union[BoxesAnswer, _Mapping]] = ..., keypoints: _Optional[_Union[KeypointsAnswer, _Mapping]] = ..., polygons: _Optional[_Union[PolygonsAnswer, _Mapping]] = ..., masks: _Optional[_Union[MasksAnswer, _Mapping]] = ..., spans: _Optional[_Union[SpansAnswer, _Mapping]] = ..., transcription: _Optional[_Union[TranscriptionAnswer, _Mapping]] = ..., pairwise: _Optional[_Union[PairwiseAnswer, _Mapping]] = ...) -> None: ...

class MinuteCount(_message.Message):
    __slots__ = ("minute", "count")
    MINUTE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    minute: int
    count: int
    def __init__(self, minute: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
