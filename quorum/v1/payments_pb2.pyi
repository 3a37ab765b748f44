import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from quorum.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AdjustLedgerRequest(_message.Message):
    __slots__ = ("request_id", "debit_account", "credit_account", "amount_cents", "currency", "job_id", "reason")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    debit_account: str
    credit_account: str
    amount_cents: int
    currency: str
    job_id: str
    reason: str
    def __init__(self, request_id: _Optional[str] = ..., debit_account: _Optional[str] = ..., credit_account: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., job_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class LedgerAdjustment(_message.Message):
    __slots__ = ("request_id", "entry", "reason", "created", "requested_by")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    entry: LedgerEntry
    reason: str
    created: bool
    requested_by: str
    def __init__(self, request_id: _Optional[str] = ..., entry: _Optional[_Union[LedgerEntry, _Mapping]] = ..., reason: _Optional[str] = ..., created: _Optional[bool] = ..., requested_by: _Optional[str] = ...) -> None: ...

class QuoteRequest(_message.Message):
    __slots__ = ("spec", "objects", "expected_overlap", "seconds_per_answer", "expected_annotations_per_object")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    SECONDS_PER_ANSWER_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ANNOTATIONS_PER_OBJECT_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.JobSpec
    objects: int
    expected_overlap: float
    seconds_per_answer: int
    expected_annotations_per_object: float
    def __init__(self, spec: _Optional[_Union[_common_pb2.JobSpec, _Mapping]] = ..., objects: _Optional[int] = ..., expected_overlap: _Optional[float] = ..., seconds_per_answer: _Optional[int] = ..., expected_annotations_per_object: _Optional[float] = ...) -> None: ...

class JobQuote(_message.Message):
    __slots__ = ("currency", "objects", "billable_objects", "expected_answers", "expected_active_ms", "client_cents", "worker_cents", "pilot_discount_cents", "margin_cents", "max_gold_bonus_cents", "expected_overlap", "expected_annotations", "annotation_cents", "free_answers")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    BILLABLE_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ACTIVE_MS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CENTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_CENTS_FIELD_NUMBER: _ClassVar[int]
    PILOT_DISCOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_CENTS_FIELD_NUMBER: _ClassVar[int]
    MAX_GOLD_BONUS_CENTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_ANNOTATIONS_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_CENTS_FIELD_NUMBER: _ClassVar[int]
    FREE_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    objects: int
    billable_objects: int
    expected_answers: int
    expected_active_ms: int
    client_cents: int
    worker_cents: int
    pilot_discount_cents: int
    margin_cents: int
    max_gold_bonus_cents: int
    expected_overlap: float
    expected_annotations: int
    annotation_cents: int
    free_answers: int
    def __init__(self, currency: _Optional[str] = ..., objects: _Optional[int] = ..., billable_objects: _Optional[int] = ..., expected_answers: _Optional[int] = ..., expected_active_ms: _Optional[int] = ..., client_cents: _Optional[int] = ..., worker_cents: _Optional[int] = ..., pilot_discount_cents: _Optional[int] = ..., margin_cents: _Optional[int] = ..., max_gold_bonus_cents: _Optional[int] = ..., expected_overlap: _Optional[float] = ..., expected_annotations: _Optional[int] = ..., annotation_cents: _Optional[int] = ..., free_answers: _Optional[int] = ...) -> None: ...

class SetBudgetCapRequest(_message.Message):
    __slots__ = ("job_id", "budget_cap_cents")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_CENTS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    budget_cap_cents: int
    def __init__(self, job_id: _Optional[str] = ..., budget_cap_cents: _Optional[int] = ...) -> None: ...

class GetWorkerStatementRequest(_message.Message):
    __slots__ = ("worker_id", "page_size", "page_token")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    page_size: int
    page_token: str
    def __init__(self, worker_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class StatementLine(_message.Message):
    __slots__ = ("answer_id", "job_id", "task_id", "active_ms", "settled", "paid", "amount_cents", "currency", "unpaid_reason", "accepted_at")
    ANSWER_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MS_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    UNPAID_REASON_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    answer_id: str
    job_id: str
    task_id: str
    active_ms: int
    settled: bool
    paid: bool
    amount_cents: int
    currency: str
    unpaid_reason: str
    accepted_at: _timestamp_pb2.Timestamp
    def __init__(self, answer_id: _Optional[str] = ..., job_id: _Optional[str] = ..., task_id: _Optional[str] = ..., active_ms: _Optional[int] = ..., settled: _Optional[bool] = ..., paid: _Optional[bool] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., unpaid_reason: _Optional[str] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WorkerStatement(_message.Message):
    __slots__ = ("worker_id", "lines", "balances", "next_page_token", "bonuses", "adjustments")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    BALANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    BONUSES_FIELD_NUMBER: _ClassVar[int]
    ADJUSTMENTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lines: _containers.RepeatedCompositeFieldContainer[StatementLine]
    balances: _containers.RepeatedCompositeFieldContainer[WorkerBalance]
    next_page_token: str
    bonuses: _containers.RepeatedCompositeFieldContainer[QualityBonus]
    adjustments: _containers.RepeatedCompositeFieldContainer[LedgerAdjustment]
    def __init__(self, worker_id: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[StatementLine, _Mapping]]] = ..., balances: _Optional[_Iterable[_Union[WorkerBalance, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., bonuses: _Optional[_Iterable[_Union[QualityBonus, _Mapping]]] = ..., adjustments: _Optional[_Iterable[_Union[LedgerAdjustment, _Mapping]]] = ...) -> None: ...

class QualityBonus(_message.Message):
    __slots__ = ("job_id", "amount_cents", "currency", "gold_answers", "gold_correct", "paid_answers", "reason", "decided_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    GOLD_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    GOLD_CORRECT_FIELD_NUMBER: _ClassVar[int]
    PAID_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    amount_cents: int
    currency: str
    gold_answers: int
    gold_correct: int
    paid_answers: int
    reason: str
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., gold_answers: _Optional[int] = ..., gold_correct: _Optional[int] = ..., paid_answers: _Optional[int] = ..., reason: _Optional[str] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreatePayoutBatchRequest(_message.Message):
    __slots__ = ("currency", "minimum_payout_cents")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_PAYOUT_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    minimum_payout_cents: int
    def __init__(self, currency: _Optional[str] = ..., minimum_payout_cents: _Optional[int] = ...) -> None: ...

class Payout(_message.Message):
    __slots__ = ("worker_id", "amount_cents", "entry_id")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    amount_cents: int
    entry_id: str
    def __init__(self, worker_id: _Optional[str] = ..., amount_cents: _Optional[int] = ..., entry_id: _Optional[str] = ...) -> None: ...

class PayoutBatch(_message.Message):
    __slots__ = ("batch_id", "currency", "payouts", "total_cents", "export_csv", "created_at")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PAYOUTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    EXPORT_CSV_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    currency: str
    payouts: _containers.RepeatedCompositeFieldContainer[Payout]
    total_cents: int
    export_csv: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, batch_id: _Optional[str] = ..., currency: _Optional[str] = ..., payouts: _Optional[_Iterable[_Union[Payout, _Mapping]]] = ..., total_cents: _Optional[int] = ..., export_csv: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetInvoiceRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class InvoiceLine(_message.Message):
    __slots__ = ("description", "quantity", "unit_price_cents", "amount_cents", "job_id")
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    UNIT_PRICE_CENTS_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    description: str
    quantity: int
    unit_price_cents: int
    amount_cents: int
    job_id: str
    def __init__(self, description: _Optional[str] = ..., quantity: _Optional[int] = ..., unit_price_cents: _Optional[int] = ..., amount_cents: _Optional[int] = ..., job_id: _Optional[str] = ...) -> None: ...

class Invoice(_message.Message):
    __slots__ = ("job_id", "client_id", "currency", "lines", "objects_labeled", "pilot_objects", "total_cents", "issued_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_LABELED_FIELD_NUMBER: _ClassVar[int]
    PILOT_OBJECTS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    client_id: str
    currency: str
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    objects_labeled: int
    pilot_objects: int
    total_cents: int
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., client_id: _Optional[str] = ..., currency: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., objects_labeled: _Optional[int] = ..., pilot_objects: _Optional[int] = ..., total_cents: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetMoneySummaryRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class MoneySummary(_message.Message):
    __slots__ = ("currency", "billed_cents", "paid_cents", "margin_cents", "pilot_subsidy_cents", "objects_billed", "answers_paid", "answers_unpaid", "paused", "pause_reason", "budget_cap_cents", "active_ms", "gold_bonus_cents")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BILLED_CENTS_FIELD_NUMBER: _ClassVar[int]
    PAID_CENTS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_CENTS_FIELD_NUMBER: _ClassVar[int]
    PILOT_SUBSIDY_CENTS_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_BILLED_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_PAID_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_UNPAID_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PAUSE_REASON_FIELD_NUMBER: _ClassVar[int]
    BUDGET_CAP_CENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_MS_FIELD_NUMBER: _ClassVar[int]
    GOLD_BONUS_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    billed_cents: int
    paid_cents: int
    margin_cents: int
    pilot_subsidy_cents: int
    objects_billed: int
    answers_paid: int
    answers_unpaid: int
    paused: bool
    pause_reason: str
    budget_cap_cents: int
    active_ms: int
    gold_bonus_cents: int
    def __init__(self, currency: _Optional[str] = ..., billed_cents: _Optional[int] = ..., paid_cents: _Optional[int] = ..., margin_cents: _Optional[int] = ..., pilot_subsidy_cents: _Optional[int] = ..., objects_billed: _Optional[int] = ..., answers_paid: _Optional[int] = ..., answers_unpaid: _Optional[int] = ..., paused: _Optional[bool] = ..., pause_reason: _Optional[str] = ..., budget_cap_cents: _Optional[int] = ..., active_ms: _Optional[int] = ..., gold_bonus_cents: _Optional[int] = ...) -> None: ...

class GetWorkerBalanceRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class WorkerBalance(_message.Message):
    __slots__ = ("worker_id", "currency", "earned_cents", "answers_paid", "paid_out_cents", "owed_cents", "answers_unpaid")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    EARNED_CENTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_PAID_FIELD_NUMBER: _ClassVar[int]
    PAID_OUT_CENTS_FIELD_NUMBER: _ClassVar[int]
    OWED_CENTS_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_UNPAID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    currency: str
    earned_cents: int
    answers_paid: int
    paid_out_cents: int
    owed_cents: int
    answers_unpaid: int
    def __init__(self, worker_id: _Optional[str] = ..., currency: _Optional[str] = ..., earned_cents: _Optional[int] = ..., answers_paid: _Optional[int] = ..., paid_out_cents: _Optional[int] = ..., owed_cents: _Optional[int] = ..., answers_unpaid: _Optional[int] = ...) -> None: ...

class ListLedgerEntriesRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class LedgerEntry(_message.Message):
    __slots__ = ("entry_id", "event_id", "job_id", "debit_account", "credit_account", "amount_cents", "currency", "memo", "posted_at")
    ENTRY_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DEBIT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CREDIT_ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_CENTS_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    MEMO_FIELD_NUMBER: _ClassVar[int]
    POSTED_AT_FIELD_NUMBER: _ClassVar[int]
    entry_id: str
    event_id: str
    job_id: str
    debit_account: str
    credit_account: str
    amount_cents: int
    currency: str
    memo: str
    posted_at: _timestamp_pb2.Timestamp
    def __init__(self, entry_id: _Optional[str] = ..., event_id: _Optional[str] = ..., job_id: _Optional[str] = ..., debit_account: _Optional[str] = ..., credit_account: _Optional[str] = ..., amount_cents: _Optional[int] = ..., currency: _Optional[str] = ..., memo: _Optional[str] = ..., posted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListLedgerEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LedgerEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LedgerEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class VerifyLedgerRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AccountBalance(_message.Message):
    __slots__ = ("account", "currency", "balance_cents")
    ACCOUNT_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    BALANCE_CENTS_FIELD_NUMBER: _ClassVar[int]
    account: str
    currency: str
    balance_cents: int
    def __init__(self, account: _Optional[str] = ..., currency: _Optional[str] = ..., balance_cents: _Optional[int] = ...) -> None: ...

class LedgerVerification(_message.Message):
    __slots__ = ("balanced", "entries", "debits_cents", "credits_cents", "accounts", "problems", "totals")
    BALANCED_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DEBITS_CENTS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_CENTS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    TOTALS_FIELD_NUMBER: _ClassVar[int]
    balanced: bool
    entries: int
    debits_cents: int
    credits_cents: int
    accounts: _containers.RepeatedCompositeFieldContainer[AccountBalance]
    problems: _containers.RepeatedScalarFieldContainer[str]
    totals: _containers.RepeatedCompositeFieldContainer[CurrencyTotals]
    def __init__(self, balanced: _Optional[bool] = ..., entries: _Optional[int] = ..., debits_cents: _Optional[int] = ..., credits_cents: _Optional[int] = ..., accounts: _Optional[_Iterable[_Union[AccountBalance, _Mapping]]] = ..., problems: _Optional[_Iterable[str]] = ..., totals: _Optional[_Iterable[_Union[CurrencyTotals, _Mapping]]] = ...) -> None: ...

class CurrencyTotals(_message.Message):
    __slots__ = ("currency", "debits_cents", "credits_cents")
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    DEBITS_CENTS_FIELD_NUMBER: _ClassVar[int]
    CREDITS_CENTS_FIELD_NUMBER: _ClassVar[int]
    currency: str
    debits_cents: int
    credits_cents: int
    def __init__(self, currency: _Optional[str] = ..., debits_cents: _Optional[int] = ..., credits_cents: _Optional[int] = ...) -> None: ...

class GetPeriodInvoiceRequest(_message.Message):
    __slots__ = ("client_id", "period_start", "period_end", "currency")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    currency: str
    def __init__(self, client_id: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., currency: _Optional[str] = ...) -> None: ...

class PeriodInvoice(_message.Message):
    __slots__ = ("client_id", "currency", "period_start", "period_end", "lines", "total_cents", "issued_at")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    PERIOD_START_FIELD_NUMBER: _ClassVar[int]
    PERIOD_END_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CENTS_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    currency: str
    period_start: _timestamp_pb2.Timestamp
    period_end: _timestamp_pb2.Timestamp
    lines: _containers.RepeatedCompositeFieldContainer[InvoiceLine]
    total_cents: int
    issued_at: _timestamp_pb2.Timestamp
    def __init__(self, client_id: _Optional[str] = ..., currency: _Optional[str] = ..., period_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., period_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lines: _Optional[_Iterable[_Union[InvoiceLine, _Mapping]]] = ..., total_cents: _Optional[int] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
