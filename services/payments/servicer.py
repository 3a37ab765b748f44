"""The PaymentsService gRPC servicer: validates requests, calls the ledger and
converts its results to protobuf. Domain errors become status codes in
:mod:`quorum.rpc`."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from quorum.errors import InvalidArgument
from quorum.jobspecmessages import spec_from_proto
from quorum.security.principal import Role, current_principal
from quorum.v1 import payments_pb2, payments_pb2_grpc

from . import domain
from .handlers import Ledger

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentsService"].full_name


def _id(field: str, value: str, required: bool) -> str:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > domain.MAX_ID_CHARS:
        raise InvalidArgument(field, f"is longer than {domain.MAX_ID_CHARS} characters")
    return value


def _timestamp(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _summary(summary: domain.MoneySummary) -> payments_pb2.MoneySummary:
    return payments_pb2.MoneySummary(
        currency=summary.currency,
        billed_cents=summary.billed_cents,
        paid_cents=summary.paid_cents,
        margin_cents=summary.margin_cents,
        pilot_subsidy_cents=summary.pilot_subsidy_cents,
        objects_billed=summary.objects_billed,
        answers_paid=summary.answers_paid,
        answers_unpaid=summary.answers_unpaid,
        paused=summary.paused,
        pause_reason=summary.pause_reason,
        budget_cap_cents=summary.budget_cap_cents,
        active_ms=summary.active_ms,
        gold_bonus_cents=summary.gold_bonus_cents,
    )


def _balance(balance: domain.WorkerBalance) -> payments_pb2.WorkerBalance:
    return payments_pb2.WorkerBalance(
        worker_id=balance.worker_id,
        currency=balance.currency,
        earned_cents=balance.earned_cents,
        answers_paid=balance.answers_paid,
        paid_out_cents=balance.paid_out_cents,
        owed_cents=balance.owed_cents,
        answers_unpaid=balance.answers_unpaid,
    )


def _adjustment(adjustment: domain.Adjustment, requested_by: bool = True) -> payments_pb2.LedgerAdjustment:
    return payments_pb2.LedgerAdjustment(
        request_id=adjustment.request_id,
        entry=_entry(adjustment.entry),
        reason=adjustment.reason,
        created=adjustment.created,
        requested_by=adjustment.requested_by if requested_by else "",
    )


def _line(line: domain.InvoiceLine) -> payments_pb2.InvoiceLine:
    return payments_pb2.InvoiceLine(
        description=line.description,
        quantity=line.quantity,
        unit_price_cents=line.unit_price_cents,
        amount_cents=line.amount_cents,
        job_id=line.job_id,
    )


def _entry(entry: domain.LedgerEntry) -> payments_pb2.LedgerEntry:
    p = entry.posting
    return payments_pb2.LedgerEntry(
        entry_id=str(entry.entry_id),
        event_id=p.event_id,
        job_id=p.job_id,
        debit_account=p.debit_account,
        credit_account=p.credit_account,
        amount_cents=p.amount_cents,
        currency=p.currency,
        memo=p.memo,
        posted_at=_timestamp(entry.posted_at),
    )


class PaymentsServicer(payments_pb2_grpc.PaymentsServiceServicer):
    """PaymentsService over a :class:`Ledger`. Every call is one short read transaction."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def GetInvoice(
        self, request: payments_pb2.GetInvoiceRequest, context: grpc.ServicerContext
    ) -> payments_pb2.Invoice:
        """Raises InvalidArgument("job_id") when empty, NotFound for a job without terms."""
        invoice = self._ledger.invoice(_id("job_id", request.job_id, required=True))
        return payments_pb2.Invoice(
            job_id=invoice.job_id,
            client_id=invoice.client_id,
            currency=invoice.currency,
            lines=[_line(line) for line in invoice.lines],
            objects_labeled=invoice.objects_labeled,
            pilot_objects=invoice.pilot_objects,
            total_cents=invoice.total_cents,
            issued_at=_timestamp(invoice.issued_at),
        )

    def GetPeriodInvoice(
        self, request: payments_pb2.GetPeriodInvoiceRequest, context: grpc.ServicerContext
    ) -> payments_pb2.PeriodInvoice:
        """Raises InvalidArgument for a missing client or period bound, or an end not after the start."""
        client_id = _id("client_id", request.client_id, required=True)
        for name in ("period_start", "period_end"):
            if not request.HasField(name):
                raise InvalidArgument(name, "is required")
        try:
            start = request.period_start.ToDatetime(dt.UTC)
            end = request.period_end.ToDatetime(dt.UTC)
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument("period_start", f"is not a valid time: {exc}") from exc
        invoice = self._ledger.period_invoice(client_id, start, end, request.currency)
        return payments_pb2.PeriodInvoice(
            client_id=invoice.client_id,
            currency=invoice.currency,
            period_start=_timestamp(invoice.period_start),
            period_end=_timestamp(invoice.period_end),
            lines=[_line(line) for line in invoice.lines],
            total_cents=invoice.total_cents,
            issued_at=_timestamp(invoice.issued_at),
        )

    def GetMoneySummary(
        self, request: payments_pb2.GetMoneySummaryRequest, context: grpc.ServicerContext
    ) -> payments_pb2.MoneySummary:
        """Empty job_id: every job (in the most common currency). NotFound for a job without terms."""
        return _summary(self._ledger.money_summary(_id("job_id", request.job_id, required=False)))

    def GetWorkerBalance(
        self, request: payments_pb2.GetWorkerBalanceRequest, context: grpc.ServicerContext
    ) -> payments_pb2.WorkerBalance:
        """Raises InvalidArgument("worker_id") when empty; an unknown worker has a zero balance."""
        return _balance(self._ledger.worker_balance(_id("worker_id", request.worker_id, required=True)))

    def ListLedgerEntries(
        self, request: payments_pb2.ListLedgerEntriesRequest, context: grpc.ServicerContext
    ) -> payments_pb2.ListLedgerEntriesResponse:
        """Raises InvalidArgument("page_size") outside [0, 1000], InvalidArgument("page_token") when malformed.
        A client does not see the corrections of workers' pay on its job."""
        caller = current_principal()
        page = self._ledger.list_entries(
            _id("job_id", request.job_id, required=False),
            request.page_size,
            request.page_token,
            for_client=caller is not None and caller.role is Role.CLIENT,
        )
        return payments_pb2.ListLedgerEntriesResponse(
            entries=[_entry(e) for e in page.entries], next_page_token=page.next_page_token
        )

    def VerifyLedger(
        self, request: payments_pb2.VerifyLedgerRequest, context: grpc.ServicerContext
    ) -> payments_pb2.LedgerVerification:
        """Audits the whole ledger; costs one pass over every posting."""
        result = self._ledger.verify()
        return payments_pb2.LedgerVerification(
            balanced=result.balanced,
            entries=result.entries,
            # Only meaningful for a ledger in one currency; ``totals`` has them per currency.
            debits_cents=result.totals[0].debits_cents if len(result.totals) == 1 else 0,
            credits_cents=result.totals[0].credits_cents if len(result.totals) == 1 else 0,
            totals=[
                payments_pb2.CurrencyTotals(
                    currency=t.currency, debits_cents=t.debits_cents, credits_cents=t.credits_cents
                )
                for t in result.totals
            ],
            accounts=[
                payments_pb2.AccountBalance(account=a.account, currency=a.currency, balance_cents=a.balance_cents)
                for a in result.accounts
            ],
            problems=result.problems,
        )

    def Quote(self, request: payments_pb2.QuoteRequest, context: grpc.ServicerContext) -> payments_pb2.JobQuote:
        """Raises InvalidArgument naming the field: "spec" when missing, "spec.<field>" for
        whatever CreateJob would refuse, then see :func:`domain.quote`. No I/O."""
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "required")
        annotations = (
            request.expected_annotations_per_object if request.HasField("expected_annotations_per_object") else None
        )
        estimate = domain.quote_job(
            spec_from_proto(request.spec),
            request.objects,
            request.expected_overlap,
            request.seconds_per_answer,
            annotations_per_object=annotations,
        )
        return payments_pb2.JobQuote(
            currency=estimate.currency,
            objects=estimate.objects,
            billable_objects=estimate.billable_objects,
            expected_answers=estimate.expected_answers,
            expected_active_ms=estimate.expected_active_ms,
            client_cents=estimate.client_cents,
            worker_cents=estimate.worker_cents,
            pilot_discount_cents=estimate.pilot_discount_cents,
            margin_cents=estimate.margin_cents,
            max_gold_bonus_cents=estimate.max_gold_bonus_cents,
            expected_overlap=estimate.expected_overlap,
            expected_annotations=estimate.expected_annotations,
            annotation_cents=estimate.annotation_cents,
            free_answers=estimate.free_answers,
        )

    def SetBudgetCap(
        self, request: payments_pb2.SetBudgetCapRequest, context: grpc.ServicerContext
    ) -> payments_pb2.MoneySummary:
        """Raises InvalidArgument("job_id" / "budget_cap_cents"), NotFound for a job without terms."""
        job_id = _id("job_id", request.job_id, required=True)
        return _summary(self._ledger.set_budget_cap(job_id, request.budget_cap_cents))

    def GetWorkerStatement(
        self, request: payments_pb2.GetWorkerStatementRequest, context: grpc.ServicerContext
    ) -> payments_pb2.WorkerStatement:
        """Raises InvalidArgument("worker_id" / "page_size" / "page_token")."""
        worker_id = _id("worker_id", request.worker_id, required=True)
        statement = self._ledger.worker_statement(worker_id, request.page_size, request.page_token)
        return payments_pb2.WorkerStatement(
            worker_id=statement.worker_id,
            lines=[
                payments_pb2.StatementLine(
                    answer_id=line.answer_id,
                    job_id=line.job_id,
                    task_id=line.task_id,
                    active_ms=line.active_ms,
                    settled=line.settled,
                    paid=line.paid,
                    amount_cents=line.amount_cents,
                    currency=line.currency,
                    unpaid_reason=line.unpaid_reason,
                    accepted_at=_timestamp(line.accepted_at),
                )
                for line in statement.lines
            ],
            balances=[_balance(b) for b in statement.balances],
            next_page_token=statement.next_page_token,
            bonuses=[
                payments_pb2.QualityBonus(
                    job_id=bonus.job_id,
                    amount_cents=bonus.amount_cents,
                    currency=bonus.currency,
                    gold_answers=bonus.gold_answers,
                    gold_correct=bonus.gold_correct,
                    paid_answers=bonus.paid_answers,
                    reason=bonus.reason,
                    decided_at=_timestamp(bonus.decided_at),
                )
                for bonus in statement.bonuses
            ],
            # A worker reads who corrected its pay from the reason, not from a staff key's name.
            adjustments=[_adjustment(a, requested_by=False) for a in statement.adjustments],
        )

    def CreatePayoutBatch(
        self, request: payments_pb2.CreatePayoutBatchRequest, context: grpc.ServicerContext
    ) -> payments_pb2.PayoutBatch:
        """Raises InvalidArgument("currency" / "minimum_payout_cents")."""
        batch = self._ledger.create_payout_batch(request.currency, request.minimum_payout_cents)
        return payments_pb2.PayoutBatch(
            batch_id=batch.batch_id,
            currency=batch.currency,
            payouts=[
                payments_pb2.Payout(worker_id=p.worker_id, amount_cents=p.amount_cents, entry_id=str(p.entry_id))
                for p in batch.payouts
            ],
            total_cents=batch.total_cents,
            export_csv=domain.payout_csv(batch),
            created_at=_timestamp(batch.created_at),
        )

    def AdjustLedger(
        self, request: payments_pb2.AdjustLedgerRequest, context: grpc.ServicerContext
    ) -> payments_pb2.LedgerAdjustment:
        """Raises InvalidArgument naming the field, NotFound for a job without terms,
        FailedPrecondition for a reused request id or pay taken back beyond what is owed."""
        adjustment = self._ledger.adjust(
            domain.AdjustmentRequest(
                request_id=_id("request_id", request.request_id, required=True),
                debit_account=request.debit_account,
                credit_account=request.credit_account,
                amount_cents=request.amount_cents,
                currency=request.currency,
                job_id=_id("job_id", request.job_id, required=False),
                reason=request.reason,
            )
        )
        return _adjustment(adjustment)
