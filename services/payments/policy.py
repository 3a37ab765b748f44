"""Who may call the payments service: clients on their own jobs and invoices, workers on
their own balance and statement, staff across organisations (payouts, the ledger's checks
and its corrections are theirs alone)."""

from __future__ import annotations

from quorum.security.policy import STAFF, Owned, OwnOrg, Self, ServicePolicy, rule
from quorum.security.principal import Role

from .servicer import SERVICE_NAME

OWN_JOB = {Role.CLIENT: [Owned("job", "job_id")]}
OWN_WORKER = {Role.WORKER: [Self("worker_id")]}

POLICY = ServicePolicy(
    SERVICE_NAME,
    {
        "GetInvoice": rule(STAFF, OWN_JOB),
        "GetPeriodInvoice": rule(STAFF, {Role.CLIENT: [OwnOrg("client_id")]}),
        "GetMoneySummary": rule(STAFF, OWN_JOB),
        "GetWorkerBalance": rule(STAFF, OWN_WORKER),
        "ListLedgerEntries": rule(STAFF, OWN_JOB),
        "VerifyLedger": STAFF,
        "Quote": rule(STAFF, {Role.CLIENT: [OwnOrg("spec.client_id")]}),
        "SetBudgetCap": rule(STAFF, OWN_JOB),
        "GetWorkerStatement": rule(STAFF, OWN_WORKER),
        "CreatePayoutBatch": STAFF,
        "AdjustLedger": STAFF,
    },
)
