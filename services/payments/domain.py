"""Billing, worker pay and the double-entry ledger, as pure logic.

Money is integer minor units ("cents") of an ISO 4217 currency. Every posting
moves ``amount_cents > 0`` from one account to another: the debit account goes
up by the amount, the credit account goes down (an account's balance is
debits minus credits), so each posting balances by itself and the signed
balances of all accounts of one currency always sum to zero.

Accounts:

``client:<client_id>:receivable``
    What a client owes. Debited once per labeled object it pays for.
``platform:revenue``
    The platform's revenue. Credited once per labeled object (and once for its
    annotations), whoever pays.
``platform:pilot_subsidy``
    What the platform gives away: debited instead of the client's receivable
    for the free objects of a pilot job, so the cost of pilots stays visible.
``platform:worker_cost``
    What the platform spends on labor. Debited once per accepted answer.
``worker:<worker_id>:payable``
    What the platform owes a worker. Credited once per paid answer, debited by payouts.
``platform:payouts_in_transit``
    Money sent to workers in payout batches, until the payment provider confirms it.
``platform:quality_bonus``
    What the platform spends on quality bonuses: debited once per worker and job.

Per-hour jobs bill the client for workers' active time (``time:<answer_id>``
postings): the n-th billable answer of a job is charged
``hourly(total_ms after it) - hourly(total_ms before it)`` with
``hourly(ms) = ms * rate // 3_600_000``, so the job's total is exactly
``hourly(its billable active ms)`` whatever the order. Per-hour pay is
``hourly(the answer's active ms)`` at the pay rate, the fraction of a cent
rounded down.

An answer to a regular task is settled once its task is resolved; an answer to a
gold (known-answer) task together with the first later answer of its worker on the job
to settle, or else once its job is finished (sealed, every object billed). So a gold
answer is held back as a regular one would be, never settled ahead of its worker's
later work, and a worker's statement does not tell gold tasks apart by when they settle.
It is settled unpaid, with the reason recorded for the worker to see, when its
worker is flagged as a spammer at that moment (the newest WorkerFlagged: consensus's, or an
operator's override from tasking), or when
it is rejected: consensus found it disagrees with a confident resolution, or, for a
gold answer, tasking graded it wrong. Both rejections read the same. Answers settled
before a flag, or after it is lifted, are paid.

Quality bonus (JobSpec.gold_bonus_cents): once every object of a sealed job is
billed, each worker who answered its gold tasks is judged once. A worker with at
least ``gold_bonus_min_answers`` graded gold answers, of which at least the share
``gold_bonus_threshold`` were right, earns ``gold_bonus_cents`` for each of their
paid answers on the job (gold ones included). Answers settled after the decision
earn no bonus: by then the job is labeled and only the last live leases come in.

Per-annotation price (JobSpec.price_per_annotation_cents): a labeled object of a
per-object job is also charged its resolved label's annotations (boxes, spans,
keypoints, polygons, masks, chosen labels) x the price, in one ``annotations``
posting next to its bill, paid by whoever pays the object (the pilot subsidy for
an object within the allowance). Only the first resolution counts.

Postings are append-only; a correction is a new posting, never an edit. Staff post
corrections (:func:`adjustment`) between a client's receivable and revenue or the pilot
subsidy (a refund, a goodwill credit, a charge that was missed) or between a worker's
payable and worker cost or the quality bonus (pay owed for an answer settled unpaid by
mistake, or pay taken back), with the reason in the memo. They change no job's counters:
invoices, balances and statements show them next to what the work cost.

Each posting has a key that makes it unique: ``bill:<task_id>`` (at most one
per labeled object, whatever the number of resolutions of the task),
``annotations:<task_id>`` (at most one per labeled object),
``pay:<answer_id>`` (one per accepted answer), ``bonus:<job_id>:<worker_id>``
(at most one quality bonus per worker and job) and ``adjust:<request_id>`` (one per
correction, the caller's request id making a retried correction post once).

Nothing here does I/O; :mod:`services.payments.handlers` stores and reads.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from quorum import jobspecs
from quorum.errors import InvalidArgument
from quorum.jobspecs import (
    DEFAULT_CURRENCY,
    DEFAULT_GOLD_BONUS_MIN_ANSWERS,
    DEFAULT_GOLD_BONUS_THRESHOLD,
    DEFAULT_PILOT_ALLOWANCE,
)

PLATFORM_REVENUE = "platform:revenue"
PLATFORM_PILOT_SUBSIDY = "platform:pilot_subsidy"
PLATFORM_WORKER_COST = "platform:worker_cost"
PLATFORM_PAYOUTS = "platform:payouts_in_transit"
PLATFORM_QUALITY_BONUS = "platform:quality_bonus"
PLATFORM_ACCOUNTS = frozenset(
    {PLATFORM_REVENUE, PLATFORM_PILOT_SUBSIDY, PLATFORM_WORKER_COST, PLATFORM_PAYOUTS, PLATFORM_QUALITY_BONUS}
)

UNKNOWN_CLIENT = "unknown"

BILL = "bill"
TIME = "time"
PAY = "pay"
PAYOUT = "payout"
BONUS = "bonus"
ANNOTATIONS = "annotations"
ADJUST = "adjust"
POSTING_KINDS = frozenset({BILL, TIME, PAY, PAYOUT, BONUS, ANNOTATIONS, ADJUST})

PER_OBJECT = "per_object"
PER_HOUR = "per_hour"
PER_ANSWER = "per_answer"
MS_PER_HOUR = 3_600_000
DEFAULT_SECONDS_PER_ANSWER = 30

# Ids (jobs, tasks, answers, workers, request ids) are stored in columns of this many characters.
MAX_ID_CHARS = 200
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
# Enough to name what is wrong without making a badly damaged ledger's report unbounded.
MAX_PROBLEMS = 200


def client_receivable(client_id: str) -> str:
    """The account of what ``client_id`` owes."""
    return f"client:{client_id}:receivable"


def worker_payable(worker_id: str) -> str:
    """The account of what the platform owes ``worker_id``."""
    return f"worker:{worker_id}:payable"


def account_kind(account: str) -> str | None:
    """``"client"``, ``"worker"`` or ``"platform"`` for a well-formed account name, else None."""
    if account in PLATFORM_ACCOUNTS:
        return "platform"
    for kind, suffix in (("client", ":receivable"), ("worker", ":payable")):
        prefix = f"{kind}:"
        if account.startswith(prefix) and account.endswith(suffix) and len(account) > len(prefix) + len(suffix):
            return kind
    return None


def account_id(account: str) -> str:
    """The client or worker id inside a client's receivable or a worker's payable; "" for
    any other account."""
    kind = account_kind(account)
    if kind == "client":
        return account.removeprefix("client:").removesuffix(":receivable")
    if kind == "worker":
        return account.removeprefix("worker:").removesuffix(":payable")
    return ""


def posting_key(kind: str, ref_id: str) -> str:
    """The unique key of the posting of ``kind`` for a task (bill) or an answer (pay)."""
    return f"{kind}:{ref_id}"


def task_type_label(task_field: str) -> str:
    """``"text_classification"`` -> ``"text classification"``; empty -> ``"labeling"``."""
    return task_field.replace("_", " ") if task_field else "labeling"


@dataclass(frozen=True)
class JobTerms:
    """What a job's client pays and its workers earn, from its JobCreated event."""

    job_id: str
    client_id: str
    # Name of the JobSpec ``task`` member, e.g. "text_classification".
    task_type: str
    price_per_object_cents: int
    pay_per_answer_cents: int
    currency: str
    pilot: bool
    # Free objects (per-hour jobs: free billable answers); 0 for a job that is not a pilot.
    pilot_allowance: int
    price_mode: str = PER_OBJECT
    price_per_hour_cents: int = 0
    pay_mode: str = PER_ANSWER
    pay_per_hour_cents: int = 0
    # Quality bonus per paid answer (0: none), the accuracy on gold it takes, and the
    # graded gold answers a worker needs before it applies.
    gold_bonus_cents: int = 0
    gold_bonus_threshold: float = 0.0
    gold_bonus_min_answers: int = 0
    # Charged per annotation of a labeled object's resolved label, on top of its price.
    price_per_annotation_cents: int = 0

    @property
    def bills_time(self) -> bool:
        return self.price_mode == PER_HOUR

    @property
    def pays_time(self) -> bool:
        return self.pay_mode == PER_HOUR

    @classmethod
    def create(
        cls,
        job_id: str,
        client_id: str,
        task_type: str,
        price_per_object_cents: int,
        pay_per_answer_cents: int,
        currency: str,
        pilot: bool,
        pilot_allowance: int,
        price_mode: str = PER_OBJECT,
        price_per_hour_cents: int = 0,
        pay_mode: str = PER_ANSWER,
        pay_per_hour_cents: int = 0,
        gold_bonus_cents: int = 0,
        gold_bonus_threshold: float = 0.0,
        gold_bonus_min_answers: int = 0,
        price_per_annotation_cents: int = 0,
    ) -> JobTerms:
        """Applies the JobSpec defaults: currency USD when empty, allowance 100 when not positive,
        bonus threshold 0.9 and minimum 5 gold answers when not set (outside [0, 1]: 0.9).

        A job without a client id is billed to ``client:unknown:receivable`` so the
        ledger stays well formed; ingest requires a client id, so this does not happen.

        Negative prices and pay are taken as 0: ingest rejects them, and a ledger
        must never hold a non-positive amount, so nothing is posted for them.
        """
        return cls(
            job_id=job_id,
            client_id=client_id or UNKNOWN_CLIENT,
            task_type=task_type,
            price_per_object_cents=max(0, price_per_object_cents),
            pay_per_answer_cents=max(0, pay_per_answer_cents),
            currency=(currency.strip().upper() or DEFAULT_CURRENCY),
            pilot=pilot,
            pilot_allowance=(pilot_allowance if pilot_allowance > 0 else DEFAULT_PILOT_ALLOWANCE) if pilot else 0,
            price_mode=PER_HOUR if price_mode == PER_HOUR else PER_OBJECT,
            price_per_hour_cents=max(0, price_per_hour_cents),
            pay_mode=PER_HOUR if pay_mode == PER_HOUR else PER_ANSWER,
            pay_per_hour_cents=max(0, pay_per_hour_cents),
            gold_bonus_cents=max(0, gold_bonus_cents),
            gold_bonus_threshold=(
                gold_bonus_threshold if 0 < gold_bonus_threshold <= 1 else DEFAULT_GOLD_BONUS_THRESHOLD
            ),
            gold_bonus_min_answers=gold_bonus_min_answers
            if gold_bonus_min_answers > 0
            else DEFAULT_GOLD_BONUS_MIN_ANSWERS,
            price_per_annotation_cents=max(0, price_per_annotation_cents),
        )

    @property
    def task_label(self) -> str:
        return task_type_label(self.task_type)


@dataclass(frozen=True)
class Posting:
    """One ledger posting: ``amount_cents`` from ``credit_account`` to ``debit_account``."""

    posting_key: str
    kind: str
    # The task (bill) or answer (pay) the posting is for.
    ref_id: str
    event_id: str
    job_id: str
    debit_account: str
    credit_account: str
    amount_cents: int
    currency: str
    memo: str

    @classmethod
    def for_job(
        cls, terms: JobTerms, kind: str, ref_id: str, event_id: str, debit: str, credit: str, amount: int, memo: str
    ) -> Posting:
        """A posting of the job ``terms`` describe, in its currency, keyed by ``kind`` and ``ref_id``."""
        return cls(
            posting_key=posting_key(kind, ref_id),
            kind=kind,
            ref_id=ref_id,
            event_id=event_id,
            job_id=terms.job_id,
            debit_account=debit,
            credit_account=credit,
            amount_cents=amount,
            currency=terms.currency,
            memo=memo,
        )


@dataclass(frozen=True)
class BillDecision:
    """How one labeled object is billed: ``posting`` is None when its price is 0."""

    pilot: bool
    posting: Posting | None


def bill_object(terms: JobTerms, task_id: str, event_id: str, ordinal: int) -> BillDecision:
    """Bills the ``ordinal``-th (1-based) labeled object of a job.

    The first ``pilot_allowance`` objects of a pilot job are paid by the
    platform's pilot subsidy instead of the client; every object credits revenue.
    """
    if terms.bills_time:
        # Per-hour jobs are billed for time (bill_time); objects are only counted.
        return BillDecision(False, None)
    pilot = ordinal <= terms.pilot_allowance
    if terms.price_per_object_cents <= 0:
        return BillDecision(pilot, None)
    if pilot:
        debit = PLATFORM_PILOT_SUBSIDY
        memo = f"Pilot allowance: labeled object {task_id} ({terms.task_label})"
    else:
        debit = client_receivable(terms.client_id)
        memo = f"Labeled object {task_id} ({terms.task_label})"
    posting = Posting.for_job(
        terms,
        BILL,
        task_id,
        event_id,
        debit=debit,
        credit=PLATFORM_REVENUE,
        amount=terms.price_per_object_cents,
        memo=memo,
    )
    return BillDecision(pilot, posting)


def bill_annotations(terms: JobTerms, task_id: str, event_id: str, annotations: int, pilot: bool) -> Posting | None:
    """Charges the ``annotations`` of a labeled object's resolved label at the job's
    per-annotation price; None when either is 0 or the job is billed per hour.

    ``pilot`` is the object's own :class:`BillDecision` pilot flag: the annotations of
    a free object are paid by the pilot subsidy like the object itself.
    """
    price = terms.price_per_annotation_cents
    if terms.bills_time or price <= 0 or annotations <= 0:
        return None
    if pilot:
        debit = PLATFORM_PILOT_SUBSIDY
        memo = f"Pilot allowance: {annotations} annotations x {price} on labeled object {task_id}"
    else:
        debit = client_receivable(terms.client_id)
        memo = f"{annotations} annotations x {price} on labeled object {task_id} ({terms.task_label})"
    return Posting.for_job(
        terms,
        ANNOTATIONS,
        task_id,
        event_id,
        debit=debit,
        credit=PLATFORM_REVENUE,
        amount=annotations * price,
        memo=memo,
    )


def hourly(active_ms: int, rate_cents: int) -> int:
    """What ``active_ms`` of work costs at ``rate_cents`` an hour, the fraction of a cent dropped."""
    return max(0, active_ms) * max(0, rate_cents) // MS_PER_HOUR


def pay_amount(terms: JobTerms, active_ms: int) -> int:
    """What one paid answer earns: the per-answer pay, or its active time at the hourly pay."""
    if terms.pays_time:
        return hourly(active_ms, terms.pay_per_hour_cents)
    return terms.pay_per_answer_cents


def pay_answer(
    terms: JobTerms, answer_id: str, task_id: str, worker_id: str, event_id: str, active_ms: int = 0
) -> Posting | None:
    """Pays a worker for one accepted answer; None when it earns nothing.

    Answers to gold tasks are paid like any other: the worker cannot tell them
    apart and did the same work. Whether an answer is paid at all is
    :func:`unpaid_reason`'s to say.
    """
    amount = pay_amount(terms, active_ms)
    if amount <= 0:
        return None
    return Posting.for_job(
        terms,
        PAY,
        answer_id,
        event_id,
        debit=PLATFORM_WORKER_COST,
        credit=worker_payable(worker_id),
        amount=amount,
        memo=f"Accepted answer {answer_id} on task {task_id}",
    )


def bill_time(
    terms: JobTerms, answer_id: str, event_id: str, ordinal: int, billed_ms_before: int, active_ms: int
) -> BillDecision:
    """Bills the active time of the ``ordinal``-th (1-based) billable answer of a per-hour job.

    The amount is the growth of ``hourly(total billed ms)``, so a job's time postings add up
    to exactly its total active time at the hourly rate. The first ``pilot_allowance``
    answers of a pilot are paid by the pilot subsidy.
    """
    pilot = ordinal <= terms.pilot_allowance
    rate = terms.price_per_hour_cents
    amount = hourly(billed_ms_before + active_ms, rate) - hourly(billed_ms_before, rate)
    if amount <= 0:
        return BillDecision(pilot, None)
    debit = PLATFORM_PILOT_SUBSIDY if pilot else client_receivable(terms.client_id)
    prefix = "Pilot allowance: annotation time" if pilot else "Annotation time"
    return BillDecision(
        pilot,
        Posting.for_job(
            terms,
            TIME,
            answer_id,
            event_id,
            debit=debit,
            credit=PLATFORM_REVENUE,
            amount=amount,
            memo=f"{prefix} of answer {answer_id}: {active_ms} ms",
        ),
    )


# The platform accounts a client's or a worker's account may be corrected against.
ADJUSTMENT_COUNTERPARTS: Mapping[str, frozenset[str]] = {
    "client": frozenset({PLATFORM_REVENUE, PLATFORM_PILOT_SUBSIDY}),
    "worker": frozenset({PLATFORM_WORKER_COST, PLATFORM_QUALITY_BONUS}),
}
ADJUSTMENT_MEMO = "Adjustment: "
MAX_ADJUSTMENT_CENTS = 10**12
MAX_REASON_CHARS = 400
_ACCOUNT_CHARS = 250


@dataclass(frozen=True)
class AdjustmentRequest:
    """A correcting entry staff ask for: ``amount_cents`` from ``credit_account`` to
    ``debit_account``, posted once per ``request_id``."""

    request_id: str
    debit_account: str
    credit_account: str
    amount_cents: int
    # ISO 4217; empty: the job's currency, or USD without a job.
    currency: str
    # The job corrected ("" for none): the adjustment shows on its invoice.
    job_id: str
    reason: str


def adjusted_account(debit_account: str, credit_account: str) -> str:
    """The client receivable or worker payable an adjustment between the two accounts corrects.

    Raises InvalidArgument("debit_account" / "credit_account") unless one side is a client's
    or a worker's account and the other a platform account it may be corrected against
    (:data:`ADJUSTMENT_COUNTERPARTS`), or when the id inside the account could name nobody:
    a client id as ingest accepts it (:data:`quorum.jobspecs.CLIENT_ID`), a worker id of at
    most :data:`MAX_ID_CHARS` characters.
    """
    for name, account in (("debit_account", debit_account), ("credit_account", credit_account)):
        if len(account) > _ACCOUNT_CHARS or account_kind(account) is None:
            raise InvalidArgument(name, f"unknown account {account!r:.80}")
    if account_kind(debit_account) == "platform":
        party, counterpart, counterpart_field = credit_account, debit_account, "debit_account"
    else:
        party, counterpart, counterpart_field = debit_account, credit_account, "credit_account"
    kind = account_kind(party)
    if kind == "platform":
        raise InvalidArgument("credit_account", "one side must be a client's receivable or a worker's payable")
    allowed = ADJUSTMENT_COUNTERPARTS[str(kind)]
    if counterpart not in allowed:
        raise InvalidArgument(
            counterpart_field, f"a {kind} account is corrected against {' or '.join(sorted(allowed))}"
        )
    party_field = "credit_account" if counterpart_field == "debit_account" else "debit_account"
    owner = account_id(party)
    if kind == "client" and not jobspecs.is_client_id(owner):
        raise InvalidArgument(party_field, f"a client id is {jobspecs.CLIENT_ID_RULE} (got {owner!r:.40})")
    if kind == "worker" and len(owner) > MAX_ID_CHARS:
        raise InvalidArgument(party_field, f"a worker id has at most {MAX_ID_CHARS} characters (got {len(owner)})")
    return party


def adjustment(request: AdjustmentRequest, terms: JobTerms | None, event_id: str) -> Posting:
    """The posting of a correction; ``terms`` are those of ``request.job_id`` (None without a job).

    Raises InvalidArgument naming the field: "request_id" (required, at most
    :data:`MAX_ID_CHARS` characters), "reason" (required, at most :data:`MAX_REASON_CHARS`),
    "amount_cents" (in [1, :data:`MAX_ADJUSTMENT_CENTS`]), "currency" (ISO 4217, the job's
    own), the accounts (:func:`adjusted_account`; a client's must be the job's client). No I/O.
    """
    if not request.request_id or len(request.request_id) > MAX_ID_CHARS:
        raise InvalidArgument("request_id", f"is required, at most {MAX_ID_CHARS} characters")
    reason = " ".join(request.reason.split())
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"is required, at most {MAX_REASON_CHARS} characters: say why")
    if not 0 < request.amount_cents <= MAX_ADJUSTMENT_CENTS:
        raise InvalidArgument("amount_cents", f"must be in [1, {MAX_ADJUSTMENT_CENTS}] (got {request.amount_cents})")
    party = adjusted_account(request.debit_account, request.credit_account)
    fallback = terms.currency if terms is not None else DEFAULT_CURRENCY
    currency = request.currency.strip().upper() or fallback
    if len(currency) != 3 or not currency.isalpha():
        raise InvalidArgument("currency", f"an ISO 4217 code (got {request.currency!r:.20})")
    if terms is not None:
        if currency != terms.currency:
            raise InvalidArgument("currency", f"job {terms.job_id} is billed in {terms.currency}, not {currency}")
        if account_kind(party) == "client" and party != client_receivable(terms.client_id):
            side = "debit_account" if party == request.debit_account else "credit_account"
            raise InvalidArgument(side, f"job {terms.job_id} belongs to client {terms.client_id}")
    return Posting(
        posting_key=posting_key(ADJUST, request.request_id),
        kind=ADJUST,
        ref_id=request.request_id,
        event_id=event_id,
        job_id=request.job_id,
        debit_account=request.debit_account,
        credit_account=request.credit_account,
        amount_cents=request.amount_cents,
        currency=currency,
        memo=ADJUSTMENT_MEMO + reason,
    )


@dataclass(frozen=True)
class Adjustment:
    """A correction as posted: ``created`` False when its request id had been used before
    (nothing new was posted; ``entry`` is the first posting)."""

    request_id: str
    entry: LedgerEntry
    created: bool
    requested_by: str = ""

    @property
    def reason(self) -> str:
        return self.entry.posting.memo.removeprefix(ADJUSTMENT_MEMO)


def adjustment_line(posting: Posting, client_id: str) -> InvoiceLine:
    """An adjustment of ``client_id``'s receivable as an invoice line: negative for a credit."""
    sign = 1 if posting.debit_account == client_receivable(client_id) else -1
    amount = sign * posting.amount_cents
    return InvoiceLine(posting.memo, 1, amount, amount)


@dataclass(frozen=True)
class Verdict:
    """What consensus said of one worker's answer to a resolved task: ``agreed`` is None
    on resolutions published before consensus judged each answer."""

    label: str
    weight: float
    agreed: bool | None = None


# The reason a worker reads on a rejected answer, whether consensus or a known answer judged
# it: one wording, so that a statement never tells gold tasks apart, and no label in it.
REJECTED_REASON = "rejected: the answer disagrees with the label accepted for this task"


def spammer_reason(flag_reason: str) -> str:
    """The reason shown on an answer settled while its worker was flagged as a spammer."""
    reason = flag_reason.strip() or "consensus flagged this worker"
    return reason if reason.startswith("spammer") else f"spammer: {reason}"


@dataclass(frozen=True)
class AnswerFacts:
    """What settling one accepted answer looks at."""

    gold: bool
    # Tasking's grade of a gold answer; None when ungraded or not gold.
    gold_correct: bool | None
    # The answer's class label ("" for structured kinds).
    label: str
    # The reason of the worker's spammer flag when it is flagged at settlement, else None.
    flagged: str | None = None
    # Consensus's verdict on the answer; None for a gold answer or one consensus did not see.
    verdict: Verdict | None = None
    consensus_label: str = ""
    low_confidence: bool = False


def unpaid_reason(facts: AnswerFacts) -> str:
    """Why an accepted answer is not paid, or "" when it is.

    A worker flagged as a spammer when the answer is settled is not paid for it. A gold
    answer tasking graded wrong, and an answer consensus found disagrees with a confident
    resolution, are rejected with the same reason. Consensus's per-answer verdict decides
    when the resolution carries one; otherwise (older events) the class labels are compared,
    which a structured answer has none of. An answer consensus did not see (it came after
    the resolution) has no verdict and is compared by label. A low-confidence resolution
    rejects nobody.
    """
    if facts.flagged is not None:
        return spammer_reason(facts.flagged)
    if facts.gold:
        return REJECTED_REASON if facts.gold_correct is False else ""
    if facts.low_confidence:
        return ""
    agreed = facts.verdict.agreed if facts.verdict is not None else None
    if agreed is None:
        agreed = not (facts.consensus_label and facts.label) or facts.label == facts.consensus_label
    return "" if agreed else REJECTED_REASON


@dataclass(frozen=True)
class GoldRecord:
    """A worker's record on one job when its quality bonus is decided."""

    worker_id: str
    # Settled and paid answers on the job, gold ones included.
    paid_answers: int
    # Graded gold answers (tasking knew the gold label), and the right ones among them.
    gold_answers: int
    gold_correct: int


@dataclass(frozen=True)
class BonusDecision:
    """A worker's quality bonus on a job: ``posting`` None and ``reason`` given when none."""

    record: GoldRecord
    amount_cents: int
    reason: str
    posting: Posting | None


def bonus_ref(job_id: str, worker_id: str) -> str:
    """The reference of the one quality bonus posting a worker may get on a job."""
    return f"{job_id}:{worker_id}"


def quality_bonus(terms: JobTerms, record: GoldRecord, event_id: str) -> BonusDecision:
    """Decides a worker's quality bonus on a finished job (see the module docstring).

    Accuracy is ``gold_correct / gold_answers`` compared with the threshold as given, so
    9 right of 10 meets 0.9 exactly. The reason, shown to the worker, gives totals only.
    """
    needed = terms.gold_bonus_min_answers
    if terms.gold_bonus_cents <= 0:
        return BonusDecision(record, 0, "the job has no quality bonus", None)
    if record.gold_answers < needed:
        reason = f"{record.gold_answers} quality-check answers on this job; the bonus needs at least {needed}"
        return BonusDecision(record, 0, reason, None)
    accuracy = record.gold_correct / record.gold_answers
    if accuracy < terms.gold_bonus_threshold:
        reason = (
            f"{record.gold_correct} of {record.gold_answers} quality-check answers right ({accuracy:.1%}); "
            f"the bonus needs {terms.gold_bonus_threshold * 100:g}%"
        )
        return BonusDecision(record, 0, reason, None)
    if record.paid_answers <= 0:
        return BonusDecision(record, 0, "no paid answers on this job", None)
    amount = terms.gold_bonus_cents * record.paid_answers
    ref = bonus_ref(terms.job_id, record.worker_id)
    posting = Posting.for_job(
        terms,
        BONUS,
        ref,
        event_id,
        debit=PLATFORM_QUALITY_BONUS,
        credit=worker_payable(record.worker_id),
        amount=amount,
        memo=(
            f"Quality bonus on job {terms.job_id}: {record.paid_answers} paid answers x {terms.gold_bonus_cents}, "
            f"{record.gold_correct} of {record.gold_answers} quality-check answers right"
        ),
    )
    return BonusDecision(record, amount, "", posting)


def job_finished(objects_expected: int | None, objects_billed: int) -> bool:
    """Whether a job's quality bonuses can be decided: it is sealed (``objects_expected``
    known) and every one of its objects is labeled and billed."""
    return objects_expected is not None and objects_billed >= objects_expected


def pause_reason(terms_currency: str, charged_cents: int, cap_cents: int) -> str:
    """Why a job is paused, or "" when its cap (0: none) is not reached."""
    if cap_cents <= 0 or charged_cents < cap_cents:
        return ""
    return f"budget cap reached: charged {charged_cents} of a cap of {cap_cents} {terms_currency} minor units"


@dataclass(frozen=True)
class Quote:
    """Estimated cost of a job before submission, in minor units of ``currency``."""

    currency: str
    objects: int
    billable_objects: int
    expected_answers: int
    expected_active_ms: int
    # What the client would pay, annotations included and the pilot allowance deducted.
    client_cents: int
    worker_cents: int
    pilot_discount_cents: int
    # The quality bonus if every worker qualified; not in worker_cents.
    max_gold_bonus_cents: int = 0
    # Answers per object the quote assumes (given, or estimated from the dynamic overlap).
    expected_overlap: float = 0.0
    # Annotations expected on the labeled objects, and their charge before the allowance.
    expected_annotations: int = 0
    annotation_cents: int = 0
    # Per-hour pilots: the expected answers the allowance makes free (it counts answers there;
    # per-object pilots' free objects are objects - billable_objects).
    free_answers: int = 0

    @property
    def margin_cents(self) -> int:
        return self.client_cents - self.worker_cents


# A quote for more objects than this is a typo, and its cents would overflow int64.
MAX_QUOTE_OBJECTS = 1_000_000_000
MAX_ANNOTATIONS_PER_OBJECT = 10_000
INT64_MAX = 2**63 - 1
# How likely an answer of a worker consensus knows nothing about is right: the mean of
# consensus's reliability prior. The overlap estimate assumes every worker is such a worker.
ASSUMED_ACCURACY = 0.7


def expected_overlap(overlap_min: int, overlap_max: int, target_confidence: float) -> float:
    """Expected answers per object under dynamic overlap, when the client has no figure.

    Consensus resolves an object once it has ``overlap_min`` answers and the winning
    label's posterior reaches ``target_confidence``, asks for one more answer at a time
    below it, and stops at ``overlap_max``. The estimate takes every answer to be right
    with probability q = :data:`ASSUMED_ACCURACY` and the right label to compete with one
    wrong one; then the posterior of the leading label is ``1 / (1 + r**d)`` with
    ``r = (1 - q) / q`` and ``d`` its lead in answers. So the estimate is
    ``overlap_min`` plus, for each further answer, the share of objects still short of the
    lead the target needs: exact for that model, walked answer by answer in
    O(overlap_max**2). A crowd better than q resolves sooner, so the figure leans high;
    ``overlap_max`` bounds it.
    """
    q = ASSUMED_ACCURACY
    ratio = (1 - q) / q

    def resolved(answers: int, right: int) -> bool:
        lead = abs(2 * right - answers)
        return answers >= overlap_min and 1 / (1 + ratio**lead) >= target_confidence

    # Probability of each count of right answers among the objects still unresolved.
    open_objects = {0: 1.0}
    expected = 0.0
    for answers in range(1, overlap_max + 1):
        grown: dict[int, float] = defaultdict(float)
        for right, share in open_objects.items():
            grown[right + 1] += share * q
            grown[right] += share * (1 - q)
        expected += sum(open_objects.values())
        open_objects = {right: share for right, share in grown.items() if not resolved(answers, right)}
    return expected


def quote_job(
    spec: jobspecs.JobSpec,
    objects: int,
    expected_overlap_per_object: float,
    seconds_per_answer: int,
    annotations_per_object: float | None = None,
) -> Quote:
    """Quotes a job of ``spec`` as CreateJob would create it: the spec is checked and
    completed by :func:`quorum.jobspecs.normalise_spec` first, so a quote refuses what
    CreateJob refuses, naming the same "spec.<field>"; then :func:`quote` with its terms.
    No I/O."""
    normal = jobspecs.normalise_spec(spec)
    terms = JobTerms.create(
        job_id="",
        client_id=normal.client_id,
        task_type=normal.task_type.value if normal.task_type else "",
        price_per_object_cents=normal.price_per_object_cents,
        pay_per_answer_cents=normal.pay_per_answer_cents,
        currency=normal.currency,
        pilot=normal.pilot,
        pilot_allowance=normal.pilot_allowance,
        price_mode=normal.price_mode,
        price_per_hour_cents=normal.price_per_hour_cents,
        pay_mode=normal.pay_mode,
        pay_per_hour_cents=normal.pay_per_hour_cents,
        gold_bonus_cents=normal.gold_bonus_cents,
        gold_bonus_threshold=normal.gold_bonus_threshold,
        gold_bonus_min_answers=normal.gold_bonus_min_answers,
        price_per_annotation_cents=normal.price_per_annotation_cents,
    )
    return quote(
        terms,
        objects,
        normal.overlap_min,
        normal.overlap_max,
        expected_overlap_per_object,
        seconds_per_answer,
        target_confidence=normal.target_confidence,
        annotations_per_object=annotations_per_object,
    )


def quote(
    terms: JobTerms,
    objects: int,
    overlap_min: int,
    overlap_max: int,
    expected_overlap_per_object: float,
    seconds_per_answer: int,
    target_confidence: float = jobspecs.DEFAULT_TARGET_CONFIDENCE,
    annotations_per_object: float | None = None,
) -> Quote:
    """Estimates a job: ``objects`` x expected answers per object x the price mode, plus
    the annotations of per-object jobs priced per annotation.

    ``terms``, the overlap and ``target_confidence`` are those of a spec
    :func:`quorum.jobspecs.normalise_spec` accepted (:func:`quote_job` takes care of that).
    Answers per object: ``expected_overlap_per_object`` clamped to [overlap.min,
    overlap.max]; when 0, :func:`expected_overlap` estimates it from the overlap and
    ``target_confidence``, never above overlap.max. ``annotations_per_object``
    (boxes, spans, ... per labeled object) is required when the job charges per
    annotation. Raises InvalidArgument naming the field: "objects" when negative or above
    :data:`MAX_QUOTE_OBJECTS`, "expected_overlap" unless a number in [0, 1000],
    "seconds_per_answer" outside [0, 86400], "expected_annotations_per_object" when
    missing, negative or above :data:`MAX_ANNOTATIONS_PER_OBJECT`.
    """
    if not 0 <= objects <= MAX_QUOTE_OBJECTS:
        raise InvalidArgument("objects", f"must be between 0 and {MAX_QUOTE_OBJECTS:,} (got {objects})")
    if not 0 <= expected_overlap_per_object <= 1_000:  # also refuses NaN
        raise InvalidArgument("expected_overlap", f"must be in [0, 1000] (got {expected_overlap_per_object})")
    if not 0 <= seconds_per_answer <= 86_400:
        raise InvalidArgument("seconds_per_answer", f"must be between 0 and 86400 (got {seconds_per_answer})")
    annotation_price = 0 if terms.bills_time else terms.price_per_annotation_cents
    if annotations_per_object is None and annotation_price:
        raise InvalidArgument(
            "expected_annotations_per_object",
            "is required when spec.price_per_annotation_cents is set: the boxes, spans, keypoints, ... "
            "you expect per labeled object",
        )
    per_object_annotations = annotations_per_object or 0.0
    if not 0 <= per_object_annotations <= MAX_ANNOTATIONS_PER_OBJECT:
        raise InvalidArgument(
            "expected_annotations_per_object",
            f"must be in [0, {MAX_ANNOTATIONS_PER_OBJECT}] (got {annotations_per_object})",
        )
    if expected_overlap_per_object:
        per_object = min(max(expected_overlap_per_object, overlap_min), overlap_max)
    else:
        per_object = expected_overlap(overlap_min, overlap_max, target_confidence)
    answers = round(objects * per_object)
    ms_per_answer = (seconds_per_answer or DEFAULT_SECONDS_PER_ANSWER) * 1000
    active_ms = answers * ms_per_answer
    free = min(objects, terms.pilot_allowance)
    annotations = round(objects * per_object_annotations)
    # The annotations of the free objects are free too.
    free_annotations = round(free * per_object_annotations)
    free_answers = 0
    if terms.bills_time:
        full = hourly(active_ms, terms.price_per_hour_cents)
        # The allowance counts billable answers on per-hour jobs.
        free_answers = min(answers, terms.pilot_allowance)
        discount = full - hourly(active_ms - free_answers * ms_per_answer, terms.price_per_hour_cents)
        annotation_cents = 0
    else:
        annotation_cents = annotations * annotation_price
        full = objects * terms.price_per_object_cents + annotation_cents
        discount = free * terms.price_per_object_cents + free_annotations * annotation_price
    worker = hourly(active_ms, terms.pay_per_hour_cents) if terms.pays_time else answers * terms.pay_per_answer_cents
    max_bonus = answers * terms.gold_bonus_cents
    if max(full, worker, active_ms, max_bonus) > INT64_MAX:
        raise InvalidArgument("objects", "the quote's amounts exceed what a ledger can hold; quote fewer objects")
    return Quote(
        currency=terms.currency,
        objects=objects,
        billable_objects=objects - free if not terms.bills_time else objects,
        expected_answers=answers,
        expected_active_ms=active_ms,
        client_cents=full - discount,
        worker_cents=worker,
        pilot_discount_cents=discount,
        max_gold_bonus_cents=max_bonus,
        expected_overlap=per_object,
        expected_annotations=annotations,
        annotation_cents=annotation_cents,
        free_answers=free_answers,
    )


@dataclass
class JobCounters:
    """A job's running totals, kept next to its postings in the same transaction.

    ``objects_billed`` counts every labeled object (pilot and zero-price ones too) and
    ``answers_paid`` every accepted answer (zero-pay ones too).
    """

    objects_billed: int = 0
    pilot_objects: int = 0
    answers_paid: int = 0
    # Charged to the client (its receivable).
    billed_cents: int = 0
    pilot_subsidy_cents: int = 0
    paid_cents: int = 0
    # Accepted answers settled without pay (spammers, rejected answers, deleted jobs).
    answers_unpaid: int = 0
    # Per-hour jobs: active ms billed so far, and how many answers it came from.
    billed_ms: int = 0
    time_bills: int = 0
    # Quality bonuses: cents owed to workers and how many workers got one.
    bonus_cents: int = 0
    bonuses_paid: int = 0
    # Annotations charged (pilot ones included) and those the pilot subsidy paid.
    annotations_billed: int = 0
    pilot_annotations: int = 0

    def count_annotations(self, terms: JobTerms, posting: Posting | None) -> None:
        if posting is None:
            return
        annotations = posting.amount_cents // terms.price_per_annotation_cents
        self.annotations_billed += annotations
        if posting.debit_account == PLATFORM_PILOT_SUBSIDY:
            self.pilot_annotations += annotations
            self.pilot_subsidy_cents += posting.amount_cents
        else:
            self.billed_cents += posting.amount_cents

    def count_bonus(self, decision: BonusDecision) -> None:
        if decision.posting is not None:
            self.bonus_cents += decision.posting.amount_cents
            self.bonuses_paid += 1

    def count_time(self, active_ms: int, decision: BillDecision) -> None:
        self.billed_ms += active_ms
        self.time_bills += 1
        if decision.posting is not None:
            if decision.pilot:
                self.pilot_subsidy_cents += decision.posting.amount_cents
            else:
                self.billed_cents += decision.posting.amount_cents

    def count_object(self, decision: BillDecision) -> None:
        self.objects_billed += 1
        if decision.pilot:
            self.pilot_objects += 1
        if decision.posting is not None:
            if decision.pilot:
                self.pilot_subsidy_cents += decision.posting.amount_cents
            else:
                self.billed_cents += decision.posting.amount_cents

    def count_answer(self, posting: Posting | None) -> None:
        self.answers_paid += 1
        if posting is not None:
            self.paid_cents += posting.amount_cents

    def count_unpaid(self) -> None:
        self.answers_unpaid += 1


@dataclass(frozen=True)
class InvoiceLine:
    """One invoice line: ``quantity`` x ``unit_price_cents`` = ``amount_cents``."""

    description: str
    quantity: int
    unit_price_cents: int
    # Negative for discounts.
    amount_cents: int
    # The job the line is for, on a period invoice (which covers several); "" otherwise.
    job_id: str = ""


@dataclass(frozen=True)
class Invoice:
    """What a job's client owes, as of ``issued_at``."""

    job_id: str
    client_id: str
    currency: str
    lines: list[InvoiceLine]
    objects_labeled: int
    pilot_objects: int
    # What the client owes: the sum of the job's postings to its receivable.
    total_cents: int
    issued_at: dt.datetime


def invoice_lines(terms: JobTerms, counters: JobCounters, pilot_time_bills: int | None = None) -> list[InvoiceLine]:
    """One line for the labeled objects, one for their annotations when any were charged and,
    when any objects were free, negative "Pilot allowance" lines for them and their annotations.

    The lines add up to what the ledger charged the client when the ledger is sound.
    Per-hour jobs get one "Annotation time" line (quantity in seconds) and, when the pilot
    subsidy paid any of it, the negative pilot allowance line, whose quantity is
    ``pilot_time_bills`` (by default the first ``pilot_allowance`` of the job's time bills:
    right for a whole job).
    """
    if terms.bills_time:
        rate = terms.price_per_hour_cents
        lines = [
            InvoiceLine(
                description=f"Annotation time ({counters.billed_ms / MS_PER_HOUR:.2f} h, quantity in seconds, "
                f"price per hour)",
                quantity=counters.billed_ms // 1000,
                unit_price_cents=rate,
                amount_cents=counters.billed_cents + counters.pilot_subsidy_cents,
            )
        ]
        if counters.pilot_subsidy_cents:
            if pilot_time_bills is None:
                pilot_time_bills = min(counters.time_bills, terms.pilot_allowance)
            lines.append(
                InvoiceLine(
                    description=f"Pilot allowance (first {terms.pilot_allowance} answers free)",
                    quantity=pilot_time_bills,
                    unit_price_cents=0,
                    amount_cents=-counters.pilot_subsidy_cents,
                )
            )
        return lines
    price = terms.price_per_object_cents
    lines = [
        InvoiceLine(
            description=f"Labeled objects ({terms.task_label})",
            quantity=counters.objects_billed,
            unit_price_cents=price,
            amount_cents=counters.objects_billed * price,
        )
    ]
    annotation_price = terms.price_per_annotation_cents
    if counters.annotations_billed:
        lines.append(
            InvoiceLine(
                description="Annotations",
                quantity=counters.annotations_billed,
                unit_price_cents=annotation_price,
                amount_cents=counters.annotations_billed * annotation_price,
            )
        )
    if counters.pilot_objects:
        lines.append(
            InvoiceLine(
                description=f"Pilot allowance (first {terms.pilot_allowance} objects free)",
                quantity=counters.pilot_objects,
                unit_price_cents=-price,
                amount_cents=-counters.pilot_objects * price,
            )
        )
    if counters.pilot_annotations:
        lines.append(
            InvoiceLine(
                description="Pilot allowance (annotations of the free objects)",
                quantity=counters.pilot_annotations,
                unit_price_cents=-annotation_price,
                amount_cents=-counters.pilot_annotations * annotation_price,
            )
        )
    return lines


@dataclass(frozen=True)
class MoneySummary:
    """Money figures of a job or of every job in one currency (see :class:`JobCounters`)."""

    currency: str
    billed_cents: int
    paid_cents: int
    pilot_subsidy_cents: int
    objects_billed: int
    answers_paid: int
    answers_unpaid: int = 0
    active_ms: int = 0
    paused: bool = False
    pause_reason: str = ""
    budget_cap_cents: int = 0
    gold_bonus_cents: int = 0

    @property
    def margin_cents(self) -> int:
        return self.billed_cents - self.paid_cents - self.gold_bonus_cents

    @classmethod
    def of(cls, currency: str, counters: JobCounters) -> MoneySummary:
        return cls(
            currency=currency,
            billed_cents=counters.billed_cents,
            paid_cents=counters.paid_cents,
            pilot_subsidy_cents=counters.pilot_subsidy_cents,
            objects_billed=counters.objects_billed,
            answers_paid=counters.answers_paid,
            answers_unpaid=counters.answers_unpaid,
            active_ms=counters.billed_ms,
            gold_bonus_cents=counters.bonus_cents,
        )


@dataclass(frozen=True)
class WorkerBalance:
    """What the platform owes a worker in one currency."""

    worker_id: str
    currency: str
    earned_cents: int
    answers_paid: int
    paid_out_cents: int = 0
    answers_unpaid: int = 0

    @property
    def owed_cents(self) -> int:
        return self.earned_cents - self.paid_out_cents


@dataclass(frozen=True)
class StatementLine:
    """One accepted answer on a worker's statement."""

    answer_id: str
    job_id: str
    task_id: str
    active_ms: int
    # False while it waits for its task's resolution or its job's terms.
    settled: bool
    paid: bool
    amount_cents: int
    currency: str
    unpaid_reason: str
    accepted_at: dt.datetime


@dataclass(frozen=True)
class BonusLine:
    """A worker's quality bonus decision on one job, as the statement shows it."""

    job_id: str
    amount_cents: int
    currency: str
    gold_answers: int
    gold_correct: int
    paid_answers: int
    reason: str
    decided_at: dt.datetime


@dataclass(frozen=True)
class WorkerStatement:
    worker_id: str
    lines: list[StatementLine]
    balances: list[WorkerBalance]
    next_page_token: str
    bonuses: list[BonusLine] = field(default_factory=list)
    # Corrections of the worker's pay (first page only), oldest first.
    adjustments: list[Adjustment] = field(default_factory=list)


@dataclass(frozen=True)
class Payout:
    worker_id: str
    amount_cents: int
    entry_id: int


@dataclass(frozen=True)
class PayoutBatch:
    """Payouts made together; :func:`payout_csv` is the file for the payment provider."""

    batch_id: str
    currency: str
    payouts: list[Payout]
    created_at: dt.datetime

    @property
    def total_cents(self) -> int:
        return sum(p.amount_cents for p in self.payouts)


def payout(batch_id: str, worker_id: str, amount_cents: int, currency: str) -> Posting:
    """The posting that pays ``amount_cents`` out to a worker in a batch."""
    ref = f"{batch_id}:{worker_id}"
    return Posting(
        posting_key=posting_key(PAYOUT, ref),
        kind=PAYOUT,
        ref_id=ref,
        event_id=batch_id,
        job_id="",
        debit_account=worker_payable(worker_id),
        credit_account=PLATFORM_PAYOUTS,
        amount_cents=amount_cents,
        currency=currency,
        memo=f"Payout batch {batch_id}",
    )


def payout_csv(batch: PayoutBatch) -> str:
    """The batch as CSV: a header, then worker_id,amount_cents,currency,batch_id per payout."""
    rows = ["worker_id,amount_cents,currency,batch_id"]
    rows += [f"{_csv_field(p.worker_id)},{p.amount_cents},{batch.currency},{batch.batch_id}" for p in batch.payouts]
    return "\n".join(rows) + "\n"


def _csv_field(value: str) -> str:
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def most_common_currency(weights: Mapping[str, int]) -> str:
    """The currency with the largest weight; ties go to the alphabetically first; USD when empty."""
    if not weights:
        return DEFAULT_CURRENCY
    return min(weights, key=lambda currency: (-weights[currency], currency))


@dataclass(frozen=True)
class LedgerEntry:
    """A stored posting with its ledger sequence number and time."""

    entry_id: int
    posting: Posting
    posted_at: dt.datetime


@dataclass(frozen=True)
class LedgerPage:
    """One page of postings in ledger order."""

    entries: list[LedgerEntry]
    # Empty on the last page.
    next_page_token: str


def page_size_or_default(page_size: int) -> int:
    """0 -> 100. Raises InvalidArgument("page_size") outside [0, 1000]."""
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {page_size}")
    return page_size or DEFAULT_PAGE_SIZE


_TOKEN_VERSION = "1"  # noqa: S105 - the page-token format version, not a secret


def encode_page_token(job_id: str, after_entry_id: int) -> str:
    """An opaque token for the page after entry ``after_entry_id`` of ``job_id`` ("" = all jobs)."""
    raw = f"{_TOKEN_VERSION}|{after_entry_id}|{job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, job_id: str) -> int:
    """The entry id a page starts after; 0 for an empty token.

    Raises InvalidArgument("page_token") when the token is malformed or was
    issued for another ``job_id``.
    """
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, after, token_job = raw.split("|", 2)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token", "malformed: pass the next_page_token of the previous page") from None
    if version != _TOKEN_VERSION or not after.isdigit():
        raise InvalidArgument("page_token", "malformed: pass the next_page_token of the previous page")
    if token_job != job_id:
        raise InvalidArgument("page_token", "was issued for another job_id")
    return int(after)


@dataclass(frozen=True)
class AccountBalance:
    """An account's balance in one currency."""

    account: str
    currency: str
    # Debits minus credits.
    balance_cents: int


@dataclass(frozen=True)
class CurrencyTotals:
    """The sum of a currency's debits and of its credits: equal in a sound ledger."""

    currency: str
    debits_cents: int
    credits_cents: int


@dataclass(frozen=True)
class Verification:
    """The result of auditing the whole ledger. ``balanced`` is True when no check found a problem."""

    balanced: bool
    entries: int
    # One per currency, alphabetical: amounts in different currencies do not add up.
    totals: list[CurrencyTotals]
    accounts: list[AccountBalance]
    problems: list[str]


@dataclass(frozen=True)
class StoredWorkerTotals:
    """A worker's running totals in one currency as stored next to the ledger (what
    balances and payout batches read), or as the postings and settled answers imply."""

    earned_cents: int = 0
    paid_out_cents: int = 0
    answers_paid: int = 0
    answers_unpaid: int = 0


@dataclass(frozen=True)
class Unsettled:
    """Facts of a job that should have been settled: ``count`` of them, ``example`` one id."""

    count: int
    example: str


@dataclass(frozen=True)
class JobRecord:
    """What the ledger audit needs of a job: its terms (None while its JobCreated is pending)."""

    terms: JobTerms | None
    counters: JobCounters


@dataclass
class _JobTally:
    receivable_cents: int = 0
    subsidy_cents: int = 0
    paid_cents: int = 0
    subsidised_objects: int = 0
    time_cents: int = 0
    bills: int = 0
    time_bills: int = 0
    pays: int = 0
    bonus_cents: int = 0
    bonuses: int = 0
    # Annotation postings, the annotations they charge, and those of pilot objects.
    annotation_bills: int = 0
    pilot_annotation_bills: int = 0
    annotations: int = 0
    pilot_annotations: int = 0


@dataclass
class LedgerAuditor:
    """Checks a ledger fed one posting at a time, in O(postings) time and O(tasks + answers) memory.

    Debits equal credits in every currency by construction, as a posting is one amount
    moved between two accounts: what can break it is a posting's shape, so it checks
    that every amount is positive and that debit and credit accounts differ and are well
    formed; and each key is ``<kind>:<ref>`` of a
    known kind; at most one bill and one annotations posting per task, one pay
    per answer and one quality bonus per worker and job; annotations postings
    only on jobs with a per-annotation price, each a multiple of it; every posting matches its job's terms (currency,
    amount, accounts; a bonus is a multiple of the job's bonus); each pilot
    job's subsidised objects stay within its allowance; each job's counters
    agree with its postings and with its settled tasks and answers. With
    :meth:`check_workers` and :meth:`check_unsettled` also: the stored per-worker
    totals equal what the postings and settled answers say, and no live job with
    terms has a resolved task unbilled or an answer to a resolved task unsettled.
    """

    jobs: Mapping[str, JobRecord]
    entries: int = 0
    problems: list[str] = field(default_factory=list)
    _omitted: int = 0
    # Per currency, the sum of the amounts moved: the debit and the credit total alike.
    _moved: Counter[str] = field(default_factory=Counter)
    _balances: Counter[tuple[str, str]] = field(default_factory=Counter)
    _refs: Counter[tuple[str, str]] = field(default_factory=Counter)
    _tallies: defaultdict[str, _JobTally] = field(default_factory=lambda: defaultdict(_JobTally))
    # Per (worker payable account, currency): what the postings say it earned and was paid out.
    _earned: Counter[tuple[str, str]] = field(default_factory=Counter)
    _paid_out: Counter[tuple[str, str]] = field(default_factory=Counter)

    def _problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        else:
            self._omitted += 1

    def add(self, entry_id: int, p: Posting) -> None:
        """Audits one posting."""
        self.entries += 1
        where = f"entry {entry_id} ({p.posting_key})"
        if p.amount_cents <= 0:
            self._problem(f"{where}: amount {p.amount_cents} is not positive")
        if p.debit_account == p.credit_account:
            self._problem(f"{where}: debits and credits the same account {p.debit_account}")
        for account in (p.debit_account, p.credit_account):
            if account_kind(account) is None:
                self._problem(f"{where}: unknown account {account!r}")
        self._moved[p.currency] += p.amount_cents
        self._balances[(p.debit_account, p.currency)] += p.amount_cents
        self._balances[(p.credit_account, p.currency)] -= p.amount_cents
        if account_kind(p.credit_account) == "worker":
            self._earned[(p.credit_account, p.currency)] += p.amount_cents
        if account_kind(p.debit_account) == "worker":
            if p.kind == PAYOUT:
                self._paid_out[(p.debit_account, p.currency)] += p.amount_cents
            else:
                self._earned[(p.debit_account, p.currency)] -= p.amount_cents
        if p.kind not in POSTING_KINDS:
            self._problem(f"{where}: unknown kind {p.kind!r}")
            return
        if p.posting_key != posting_key(p.kind, p.ref_id):
            self._problem(f"{where}: key does not match kind {p.kind!r} and reference {p.ref_id!r}")
        self._refs[(p.kind, p.ref_id)] += 1
        if p.kind == ADJUST:
            self._check_adjustment(where, p)
            return
        if p.kind == PAYOUT:
            if account_kind(p.debit_account) != "worker" or p.credit_account != PLATFORM_PAYOUTS:
                self._problem(f"{where}: a payout must move money from a worker to {PLATFORM_PAYOUTS}")
            return
        tally = self._tallies[p.job_id]
        if p.kind == BONUS:
            tally.bonuses += 1
            tally.bonus_cents += p.amount_cents
            self._check_bonus(where, p)
            return
        if p.kind == ANNOTATIONS:
            self._add_annotations(where, p, tally)
            return
        if p.kind == TIME:
            tally.time_bills += 1
            tally.time_cents += p.amount_cents
            if p.debit_account == PLATFORM_PILOT_SUBSIDY:
                tally.subsidy_cents += p.amount_cents
            else:
                tally.receivable_cents += p.amount_cents
        elif p.kind == BILL:
            tally.bills += 1
            if p.debit_account == PLATFORM_PILOT_SUBSIDY:
                tally.subsidised_objects += 1
                tally.subsidy_cents += p.amount_cents
            else:
                tally.receivable_cents += p.amount_cents
        else:
            tally.pays += 1
            tally.paid_cents += p.amount_cents
        self._check_terms(where, p)

    def _add_annotations(self, where: str, p: Posting, tally: _JobTally) -> None:
        subsidised = p.debit_account == PLATFORM_PILOT_SUBSIDY
        tally.annotation_bills += 1
        if subsidised:
            tally.pilot_annotation_bills += 1
            tally.subsidy_cents += p.amount_cents
        else:
            tally.receivable_cents += p.amount_cents
        record = self.jobs.get(p.job_id)
        if record is None or record.terms is None:
            self._problem(f"{where}: job {p.job_id!r} has no terms")
            return
        terms = record.terms
        if p.currency != terms.currency:
            self._problem(f"{where}: currency {p.currency} but job {p.job_id!r} is in {terms.currency}")
        debits = {client_receivable(terms.client_id), PLATFORM_PILOT_SUBSIDY}
        if p.debit_account not in debits or p.credit_account != PLATFORM_REVENUE:
            self._problem(f"{where}: a bill must move money from {sorted(debits)} to {PLATFORM_REVENUE}")
        price = terms.price_per_annotation_cents
        if terms.bills_time or price <= 0:
            self._problem(f"{where}: an annotations posting on job {p.job_id!r}, which has no per-annotation price")
            return
        if p.amount_cents <= 0 or p.amount_cents % price:
            self._problem(
                f"{where}: amount {p.amount_cents} is not a positive multiple of the per-annotation "
                f"price {price} of job {p.job_id!r}"
            )
            return
        tally.annotations += p.amount_cents // price
        if subsidised:
            tally.pilot_annotations += p.amount_cents // price

    def _check_adjustment(self, where: str, p: Posting) -> None:
        record = self.jobs.get(p.job_id) if p.job_id else None
        if p.job_id and (record is None or record.terms is None):
            self._problem(f"{where}: job {p.job_id!r} has no terms")
            return
        reason = p.memo.removeprefix(ADJUSTMENT_MEMO)
        request = AdjustmentRequest(
            p.ref_id, p.debit_account, p.credit_account, p.amount_cents, p.currency, p.job_id, reason
        )
        try:
            adjustment(request, record.terms if record else None, p.event_id)
        except InvalidArgument as error:
            self._problem(f"{where}: not a valid adjustment: {error}")

    def _check_bonus(self, where: str, p: Posting) -> None:
        if p.debit_account != PLATFORM_QUALITY_BONUS or account_kind(p.credit_account) != "worker":
            self._problem(f"{where}: a bonus must move money from {PLATFORM_QUALITY_BONUS} to a worker")
        elif p.ref_id != bonus_ref(p.job_id, account_id(p.credit_account)):
            self._problem(f"{where}: a bonus must be keyed by its job and the worker it pays")
        record = self.jobs.get(p.job_id)
        if record is None or record.terms is None:
            self._problem(f"{where}: job {p.job_id!r} has no terms")
            return
        terms = record.terms
        if p.currency != terms.currency:
            self._problem(f"{where}: currency {p.currency} but job {p.job_id!r} is in {terms.currency}")
        if terms.gold_bonus_cents <= 0 or p.amount_cents % terms.gold_bonus_cents:
            self._problem(
                f"{where}: amount {p.amount_cents} is not a multiple of job {p.job_id!r}'s bonus "
                f"of {terms.gold_bonus_cents} per answer"
            )

    def _check_terms(self, where: str, p: Posting) -> None:
        record = self.jobs.get(p.job_id)
        if record is None or record.terms is None:
            self._problem(f"{where}: job {p.job_id!r} has no terms")
            return
        terms = record.terms
        if p.currency != terms.currency:
            self._problem(f"{where}: currency {p.currency} but job {p.job_id!r} is in {terms.currency}")
        expected_amount: int | None
        if p.kind in (BILL, TIME):
            # Time amounts vary per answer; their job total is checked in finish().
            expected_amount = terms.price_per_object_cents if p.kind == BILL else None
            if (p.kind == TIME) != terms.bills_time:
                self._problem(f"{where}: a {p.kind} posting on a job billed {terms.price_mode}")
            debits = {client_receivable(terms.client_id), PLATFORM_PILOT_SUBSIDY}
            if p.debit_account not in debits or p.credit_account != PLATFORM_REVENUE:
                self._problem(f"{where}: a bill must move money from {sorted(debits)} to {PLATFORM_REVENUE}")
        else:
            expected_amount = None if terms.pays_time else terms.pay_per_answer_cents
            if p.debit_account != PLATFORM_WORKER_COST or account_kind(p.credit_account) != "worker":
                self._problem(f"{where}: a pay must move money from {PLATFORM_WORKER_COST} to a worker")
        if expected_amount is not None and p.amount_cents != expected_amount:
            self._problem(f"{where}: amount {p.amount_cents} but job {p.job_id!r} sets {expected_amount}")

    def check_workers(
        self,
        stored: Mapping[tuple[str, str], StoredWorkerTotals],
        answers: Mapping[tuple[str, str], tuple[int, int]],
    ) -> None:
        """Compares the stored per-worker totals, keyed by (worker id, currency), with what
        the postings fed so far and the workers' settled answers (paid, unpaid) imply:
        balances and payout batches read the stored totals, so a forged total would be
        shown to the worker and paid out. Call after the last :meth:`add`."""
        implied: dict[tuple[str, str], StoredWorkerTotals] = {}
        for account, currency in set(self._earned) | set(self._paid_out):
            worker = account_id(account)
            implied[(worker, currency)] = StoredWorkerTotals(
                self._earned[(account, currency)], self._paid_out[(account, currency)]
            )
        for key, (paid, unpaid) in answers.items():
            implied[key] = replace(implied.get(key, StoredWorkerTotals()), answers_paid=paid, answers_unpaid=unpaid)
        for worker, currency in sorted(set(stored) | set(implied)):
            have = stored.get((worker, currency), StoredWorkerTotals())
            want = implied.get((worker, currency), StoredWorkerTotals())
            if have != want:
                self._problem(
                    f"worker {worker!r} ({currency}): stored totals say earned {have.earned_cents}, paid out "
                    f"{have.paid_out_cents}, {have.answers_paid} answers paid, {have.answers_unpaid} unpaid; "
                    f"the ledger says earned {want.earned_cents}, paid out {want.paid_out_cents}, "
                    f"{want.answers_paid} answers paid, {want.answers_unpaid} unpaid"
                )

    def check_unsettled(
        self, unbilled_tasks: Mapping[str, Unsettled], unsettled_answers: Mapping[str, Unsettled]
    ) -> None:
        """Reports, per job, resolved tasks left unbilled and accepted answers to resolved
        tasks left unsettled: a job with terms that is not deleted settles both in the
        transaction that brings the later of its terms and the fact."""
        for job_id, left in sorted(unbilled_tasks.items()):
            self._problem(f"job {job_id!r}: {left.count} resolved tasks not billed (e.g. task {left.example!r})")
        for job_id, left in sorted(unsettled_answers.items()):
            self._problem(
                f"job {job_id!r}: {left.count} accepted answers to resolved tasks not settled "
                f"(e.g. answer {left.example!r})"
            )

    def finish(
        self,
        settled_objects: Mapping[str, int],
        settled_answers: Mapping[str, int],
        unpaid_answers: Mapping[str, int] | None = None,
        billable_ms: Mapping[str, int] | None = None,
        decided_bonus_cents: Mapping[str, int] | None = None,
    ) -> Verification:
        """Runs the whole-ledger checks. ``settled_*`` count each job's billed tasks and paid
        answers, ``unpaid_answers`` its answers settled unpaid, ``billable_ms`` the active
        time of its billable answers (per-hour jobs) and ``decided_bonus_cents`` the sum of
        the quality bonuses recorded for its workers."""
        unpaid_answers = unpaid_answers or {}
        billable_ms = billable_ms or {}
        decided_bonus_cents = decided_bonus_cents or {}
        for (account, currency), balance in sorted(self._balances.items()):
            if account_kind(account) == "worker" and balance > 0:
                self._problem(f"{account} ({currency}): paid out {balance} more than earned")
        for (kind, ref), count in sorted(self._refs.items()):
            if count > 1:
                what = {
                    BILL: "task",
                    ANNOTATIONS: "task",
                    BONUS: "job and worker",
                    PAYOUT: "batch and worker",
                    ADJUST: "request",
                }.get(kind, "answer")
                self._problem(f"{what} {ref!r} has {count} {kind} postings")
        for job_id, record in sorted(self.jobs.items()):
            self._check_job(job_id, record, settled_objects.get(job_id, 0), settled_answers.get(job_id, 0))
            c, terms = record.counters, record.terms
            bonus_tally = self._tallies.get(job_id, _JobTally())
            decided = decided_bonus_cents.get(job_id, 0)
            paid = (bonus_tally.bonus_cents, bonus_tally.bonuses, bonus_tally.bonus_cents)
            if (c.bonus_cents, c.bonuses_paid, decided) != paid:
                self._problem(
                    f"job {job_id!r}: counters of quality bonuses are {c.bonus_cents} cents to {c.bonuses_paid} "
                    f"workers, {decided} cents decided, the ledger says {bonus_tally.bonus_cents} cents to "
                    f"{bonus_tally.bonuses} workers"
                )
            if c.answers_unpaid != unpaid_answers.get(job_id, 0):
                self._problem(
                    f"job {job_id!r}: counter of answers unpaid is {c.answers_unpaid}, "
                    f"the ledger says {unpaid_answers.get(job_id, 0)}"
                )
            if terms is not None and terms.bills_time:
                tally = self._tallies.get(job_id, _JobTally())
                ms = billable_ms.get(job_id, 0)
                expected = hourly(ms, terms.price_per_hour_cents)
                if c.billed_ms != ms or tally.time_cents != expected:
                    self._problem(
                        f"job {job_id!r}: billed {tally.time_cents} for {c.billed_ms} ms, "
                        f"{ms} ms of billable answers at the hourly rate is {expected}"
                    )
        if self._omitted:
            self.problems.append(f"... and {self._omitted} more problems")
        accounts = [
            AccountBalance(account, currency, balance)
            for (account, currency), balance in sorted(self._balances.items(), key=lambda kv: (kv[0][1], kv[0][0]))
        ]
        totals = [CurrencyTotals(currency, moved, moved) for currency, moved in sorted(self._moved.items())]
        return Verification(
            balanced=not self.problems,
            entries=self.entries,
            totals=totals,
            accounts=accounts,
            problems=list(self.problems),
        )

    def _check_job(self, job_id: str, record: JobRecord, settled_objects: int, settled_answers: int) -> None:
        tally = self._tallies.get(job_id, _JobTally())
        c = record.counters
        terms = record.terms
        if terms is not None and tally.subsidised_objects > terms.pilot_allowance:
            self._problem(
                f"job {job_id!r}: {tally.subsidised_objects} pilot-subsidised objects, "
                f"allowance {terms.pilot_allowance}"
            )
        checks: Iterable[tuple[str, int, int]] = (
            ("charged cents", c.billed_cents, tally.receivable_cents),
            ("pilot subsidy cents", c.pilot_subsidy_cents, tally.subsidy_cents),
            ("paid cents", c.paid_cents, tally.paid_cents),
            ("objects billed", c.objects_billed, settled_objects),
            ("answers paid", c.answers_paid, settled_answers),
        )
        for name, counted, actual in checks:
            if counted != actual:
                self._problem(f"job {job_id!r}: counter of {name} is {counted}, the ledger says {actual}")
        if c.pilot_objects > c.objects_billed:
            self._problem(f"job {job_id!r}: {c.pilot_objects} pilot objects of {c.objects_billed} billed")
        if tally.bills > c.objects_billed or tally.pays > c.answers_paid:
            self._problem(f"job {job_id!r}: more postings than billed objects or paid answers")
        # At most one annotations posting per billed object, paid by whoever paid the object.
        if tally.annotation_bills > c.objects_billed or tally.pilot_annotation_bills > c.pilot_objects:
            self._problem(
                f"job {job_id!r}: {tally.annotation_bills} annotations postings ({tally.pilot_annotation_bills} "
                f"subsidised) for {c.objects_billed} billed objects ({c.pilot_objects} pilot)"
            )
        if (c.annotations_billed, c.pilot_annotations) != (tally.annotations, tally.pilot_annotations):
            self._problem(
                f"job {job_id!r}: counters of annotations billed are {c.annotations_billed} "
                f"({c.pilot_annotations} pilot), the ledger says {tally.annotations} ({tally.pilot_annotations} pilot)"
            )


@dataclass
class PeriodCharges:
    """What the ledger charged for one job in a period, summed from its postings: the
    job's counters as they grew in the period (``billed_ms`` from the answers billed)."""

    counters: JobCounters = field(default_factory=JobCounters)
    # Time bills the pilot subsidy paid.
    pilot_time_bills: int = 0

    def add(self, terms: JobTerms, kind: str, subsidised: bool, postings: int, cents: int) -> None:
        """Counts ``postings`` of ``kind`` worth ``cents`` in all, to the pilot subsidy or not."""
        c = self.counters
        if kind == BILL:
            c.objects_billed += postings
            c.pilot_objects += postings if subsidised else 0
        elif kind == ANNOTATIONS and terms.price_per_annotation_cents > 0:
            annotations = cents // terms.price_per_annotation_cents
            c.annotations_billed += annotations
            c.pilot_annotations += annotations if subsidised else 0
        elif kind == TIME:
            c.time_bills += postings
            self.pilot_time_bills += postings if subsidised else 0
        if subsidised:
            c.pilot_subsidy_cents += cents
        else:
            c.billed_cents += cents

    def lines(self, terms: JobTerms) -> list[InvoiceLine]:
        """The job's invoice lines for the period, each naming the job."""
        return [
            replace(line, job_id=terms.job_id) for line in invoice_lines(terms, self.counters, self.pilot_time_bills)
        ]


@dataclass(frozen=True)
class PeriodInvoice:
    """What a client was charged in ``[period_start, period_end)``: per job, the lines of
    its invoice for what the period charged (each naming the job), oldest job first."""

    client_id: str
    currency: str
    period_start: dt.datetime
    period_end: dt.datetime
    lines: list[InvoiceLine]
    total_cents: int
    issued_at: dt.datetime
