"""Every RPC of every service against every role, built from the proto descriptors.

The five services run for real (in this process, on the session's broker) with a
small scenario: a job that resolves on one answer and a job whose tasks go to expert
review. For each method and role the policy table allows, a valid request succeeds;
for every other role the call is PERMISSION_DENIED, and without a key or with a
forged one UNAUTHENTICATED. An RPC added to a proto without a policy rule, or without
a request here, fails this file.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.timestamp_pb2 import Timestamp
from quorum_testing import deployment_settings

from quorum.db import make_engine
from quorum.rpc import channel
from quorum.security.keyhash import load_key_hasher
from quorum.security.keys import KeyStore, metadata
from quorum.security.policy import ServicePolicy
from quorum.security.principal import Role
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import (
    access_pb2,
    access_pb2_grpc,
    common_pb2,
    consensus_pb2,
    consensus_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    tasking_pb2,
    tasking_pb2_grpc,
)
from services.access.policy import POLICY as ACCESS_POLICY
from services.consensus.policy import POLICY as CONSENSUS_POLICY
from services.ingest.policy import POLICY as INGEST_POLICY
from services.payments.policy import POLICY as PAYMENTS_POLICY
from services.tasking.policy import POLICY as TASKING_POLICY

ORG = "org-a"
OTHER_ORG = "org-b"
WORKER = "w-1"
REVIEWER = "r-1"

PROTOS = {
    "ingest": (ingest_pb2, ingest_pb2_grpc, INGEST_POLICY),
    "tasking": (tasking_pb2, tasking_pb2_grpc, TASKING_POLICY),
    "consensus": (consensus_pb2, consensus_pb2_grpc, CONSENSUS_POLICY),
    "payments": (payments_pb2, payments_pb2_grpc, PAYMENTS_POLICY),
    "access": (access_pb2, access_pb2_grpc, ACCESS_POLICY),
}


def _methods() -> list[tuple[str, d.MethodDescriptor]]:
    found = []
    for service, (module, _, _) in PROTOS.items():
        for descriptor in module.DESCRIPTOR.services_by_name.values():
            found.extend((service, method) for method in descriptor.methods)
    return found


METHODS = _methods()


def _id(param: Any) -> str:
    return param[1].name if isinstance(param, tuple) else str(param)


def test_every_rpc_in_the_protos_has_a_policy_rule() -> None:
    missing = []
    for service, method in METHODS:
        policy: ServicePolicy = PROTOS[service][2]
        assert policy.service == method.containing_service.full_name
        if policy.rule_for(method.name) is None:
            missing.append(f"{service}.{method.name}")
    assert missing == [], f"RPCs without an access rule: {missing}"


def test_the_policy_tables_name_no_rpc_that_does_not_exist() -> None:
    for service, (_, _, policy) in PROTOS.items():
        names = {m.name for s, m in METHODS if s == service}
        assert set(policy.rules) <= names, f"{service}: rules for unknown RPCs {set(policy.rules) - names}"


def _spec(name: str, *, target: float, review: bool, org: str = ORG) -> common_pb2.JobSpec:
    spec = common_pb2.JobSpec(
        name=name,
        client_id=org,
        overlap=common_pb2.Overlap(min=1, max=1),
        target_confidence=target,
        gold_share=0.0,
        price_per_object_cents=5,
        pay_per_answer_cents=1,
        currency="USD",
        expert_review=review,
        lease_seconds=60,
    )
    spec.text_classification.labels.extend(["pos", "neg"])
    return spec


def _eventually(read: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = read()
            if done(last):
                return last
        except grpc.RpcError as error:
            if error.code() not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s; last: {last}")


@dataclass
class Scenario:
    settings: Settings
    keys: dict[Role, str]
    channels: dict[str, grpc.Channel]
    plain_job: str = ""
    review_job: str = ""
    resolved_task: str = ""
    review_task: str = ""
    # Another organisation's job and one of its resolved tasks.
    foreign_job: str = ""
    foreign_task: str = ""
    stubs: dict[str, Any] = field(default_factory=dict)

    def stub(self, service: str) -> Any:
        if service not in self.stubs:
            grpc_module, module = PROTOS[service][1], PROTOS[service][0]
            name = next(iter(module.DESCRIPTOR.services_by_name))
            self.stubs[service] = getattr(grpc_module, f"{name}Stub")(self.channels[service])
        return self.stubs[service]

    def md(self, role: Role) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.keys[role]}"),)

    def session(self) -> str:
        reply = self.stub("tasking").StartSession(
            tasking_pb2.StartSessionRequest(worker_id=WORKER), metadata=self.md(Role.WORKER), timeout=10
        )
        return str(reply.session_id)

    def lease(self, job_id: str) -> tuple[str, tasking_pb2.WorkerTask]:
        session = self.session()
        reply = _eventually(
            lambda: self.stub("tasking").GetNextTask(
                tasking_pb2.GetNextTaskRequest(session_id=session, job_id=job_id),
                metadata=self.md(Role.WORKER),
                timeout=10,
            ),
            lambda r: r.HasField("task"),
            f"a task of {job_id}",
        )
        return session, reply.task

    def answer(self, job_id: str) -> str:
        session, task = self.lease(job_id)
        self.stub("tasking").SubmitAnswer(
            tasking_pb2.SubmitAnswerRequest(
                session_id=session,
                lease_id=task.lease_id,
                answer=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="pos")),
            ),
            metadata=self.md(Role.WORKER),
            timeout=10,
        )
        return str(task.task_id)


@pytest.fixture(scope="module")
def scenario(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    settings = deployment_settings(tmp_path_factory.mktemp("matrix"), kafka_bootstrap)
    engine = make_engine(settings.access_database())
    metadata.create_all(engine)
    store = KeyStore(engine, load_key_hasher(settings))
    keys = {
        Role.ADMIN: store.create(Role.ADMIN)[1],
        Role.OPERATOR: store.create(Role.OPERATOR)[1],
        Role.CLIENT: store.create(Role.CLIENT, org_id=ORG)[1],
        Role.WORKER: store.create(Role.WORKER, subject=WORKER)[1],
        Role.REVIEWER: store.create(Role.REVIEWER, subject=REVIEWER)[1],
    }
    engine.dispose()
    running: dict[str, RunningService] = {}
    channels: dict[str, grpc.Channel] = {}
    try:
        import importlib

        for name in PROTOS:
            build = importlib.import_module(f"services.{name}.bootstrap").build
            running[name] = start_service(build, settings, address="127.0.0.1:0")
            channels[name] = channel(f"127.0.0.1:{running[name].port}")
            if name == "ingest":
                # The others ask ingest who owns a job they have not heard of.
                settings = settings.model_copy(update={"ingest_addr": f"127.0.0.1:{running[name].port}"})
        sc = Scenario(settings, keys, channels)
        ingest = sc.stub("ingest")
        admin = sc.md(Role.ADMIN)
        lines = b"\n".join(f'{{"id": "t{i}", "text": "text number {i}"}}'.encode() for i in range(60))
        for attr, spec in (
            ("plain_job", _spec("plain", target=0.5, review=False)),
            ("review_job", _spec("review", target=0.99, review=True)),
            ("foreign_job", _spec("theirs", target=0.5, review=False, org=OTHER_ORG)),
        ):
            job = ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), metadata=admin, timeout=10)
            ingest.ImportManifest(
                ingest_pb2.ImportManifestRequest(
                    job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=lines
                ),
                metadata=admin,
                timeout=30,
            )
            ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), metadata=admin, timeout=10)
            setattr(sc, attr, job.job_id)
        sc.resolved_task = sc.answer(sc.plain_job)
        sc.review_task = sc.answer(sc.review_job)
        sc.foreign_task = sc.answer(sc.foreign_job)
        consensus = sc.stub("consensus")
        _eventually(
            lambda: consensus.GetResult(
                consensus_pb2.GetResultRequest(task_id=sc.resolved_task), metadata=admin, timeout=10
            ),
            lambda r: r.task_id == sc.resolved_task,
            "the first result",
        )
        _eventually(
            lambda: consensus.GetResult(
                consensus_pb2.GetResultRequest(task_id=sc.foreign_task), metadata=admin, timeout=10
            ),
            lambda r: r.task_id == sc.foreign_task,
            "the other organisation's result",
        )
        _eventually(
            lambda: sc.stub("payments").GetInvoice(
                payments_pb2.GetInvoiceRequest(job_id=sc.foreign_job), metadata=admin, timeout=10
            ),
            lambda r: True,
            "the other organisation's invoice",
        )
        _eventually(
            lambda: consensus.ListReviewTasks(
                consensus_pb2.ListReviewTasksRequest(job_id=sc.review_job), metadata=admin, timeout=10
            ),
            lambda r: len(r.tasks) > 0,
            "a review task",
        )
        _eventually(
            lambda: sc.stub("payments").GetWorkerBalance(
                payments_pb2.GetWorkerBalanceRequest(worker_id=WORKER), metadata=admin, timeout=10
            ),
            lambda r: r.earned_cents > 0,
            "the worker's pay",
        )
        yield sc
    finally:
        for ch in channels.values():
            ch.close()
        for service in running.values():
            service.stop()


def _period() -> tuple[Timestamp, Timestamp]:
    start, end = Timestamp(), Timestamp()
    now = dt.datetime.now(dt.UTC)
    start.FromDatetime(now - dt.timedelta(days=1))
    end.FromDatetime(now + dt.timedelta(days=1))
    return start, end


def _fresh_job(sc: Scenario) -> str:
    job = sc.stub("ingest").CreateJob(
        ingest_pb2.CreateJobRequest(spec=_spec("fresh", target=0.5, review=False)),
        metadata=sc.md(Role.ADMIN),
        timeout=10,
    )
    return str(job.job_id)


def _throwaway_key(sc: Scenario) -> str:
    created = sc.stub("access").CreateKey(
        access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id=ORG), metadata=sc.md(Role.ADMIN), timeout=10
    )
    return str(created.key.key_id)


def _review_task(sc: Scenario) -> str:
    """A task waiting for review: answer one more object of the review job."""
    task_id = sc.answer(sc.review_job)
    _eventually(
        lambda: sc.stub("consensus").ListReviewTasks(
            consensus_pb2.ListReviewTasksRequest(job_id=sc.review_job, page_size=100),
            metadata=sc.md(Role.ADMIN),
            timeout=10,
        ),
        lambda r: task_id in {t.task_id for t in r.tasks},
        "the new review task",
    )
    return task_id


def _submit(sc: Scenario) -> Any:
    session, task = sc.lease(sc.plain_job)
    return tasking_pb2.SubmitAnswerRequest(
        session_id=session,
        lease_id=task.lease_id,
        answer=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="neg")),
    )


def _with_lease(kind: Callable[..., Any]) -> Callable[[Scenario], Any]:
    def make(sc: Scenario) -> Any:
        session, task = sc.lease(sc.plain_job)
        return kind(session_id=session, lease_id=task.lease_id)

    return make


# A valid request for each RPC, made fresh for each call (some consume what they act on).
REQUESTS: dict[str, Callable[[Scenario], Any]] = {
    "CreateJob": lambda sc: ingest_pb2.CreateJobRequest(spec=_spec("new", target=0.5, review=False)),
    "GetJob": lambda sc: ingest_pb2.GetJobRequest(job_id=sc.plain_job),
    "ListJobs": lambda sc: ingest_pb2.ListJobsRequest(client_id=ORG),
    "UploadFiles": lambda sc: iter(
        [ingest_pb2.UploadChunk(job_id=_fresh_job(sc), filename="a.txt", data=b"hello", end_of_file=True)]
    ),
    "ImportManifest": lambda sc: ingest_pb2.ImportManifestRequest(
        job_id=_fresh_job(sc), format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=b'{"id": "x", "text": "hi"}'
    ),
    "SealJob": lambda sc: ingest_pb2.SealJobRequest(job_id=_fresh_job(sc)),
    "DeleteJob": lambda sc: ingest_pb2.DeleteJobRequest(job_id=_fresh_job(sc)),
    "SetJobSla": lambda sc: ingest_pb2.SetJobSlaRequest(job_id=_fresh_job(sc), sla_deadline=_period()[1]),
    "StartSession": lambda sc: tasking_pb2.StartSessionRequest(worker_id=WORKER),
    "GetNextTask": lambda sc: tasking_pb2.GetNextTaskRequest(session_id=sc.session(), job_id=sc.plain_job),
    "SubmitAnswer": _submit,
    "Heartbeat": _with_lease(tasking_pb2.HeartbeatRequest),
    "SkipTask": _with_lease(tasking_pb2.SkipTaskRequest),
    "GetTaskingStats": lambda sc: tasking_pb2.GetTaskingStatsRequest(job_id=sc.plain_job),
    # Another worker than the scenario's, which must keep getting tasks.
    "SuspendWorker": lambda sc: tasking_pb2.SuspendWorkerRequest(
        worker_id=f"w-{uuid.uuid4().hex[:6]}", reason="copied answers"
    ),
    "ReinstateWorker": lambda sc: tasking_pb2.ReinstateWorkerRequest(worker_id=f"w-{uuid.uuid4().hex[:6]}"),
    "GetWorkerStatus": lambda sc: tasking_pb2.GetWorkerStatusRequest(worker_id=WORKER),
    "ListWorkerStatuses": lambda sc: tasking_pb2.ListWorkerStatusesRequest(),
    "GetResult": lambda sc: consensus_pb2.GetResultRequest(task_id=sc.resolved_task),
    "ExportResults": lambda sc: consensus_pb2.ExportResultsRequest(job_id=sc.plain_job),
    "GetJobQuality": lambda sc: consensus_pb2.GetJobQualityRequest(job_id=sc.plain_job),
    "ListWorkers": lambda sc: consensus_pb2.ListWorkersRequest(job_id=sc.plain_job),
    "ListReviewTasks": lambda sc: consensus_pb2.ListReviewTasksRequest(job_id=sc.review_job),
    "SubmitReview": lambda sc: consensus_pb2.SubmitReviewRequest(
        task_id=_review_task(sc),
        reviewer_id=REVIEWER,
        label=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="neg")),
    ),
    "GetInvoice": lambda sc: payments_pb2.GetInvoiceRequest(job_id=sc.plain_job),
    "GetPeriodInvoice": lambda sc: payments_pb2.GetPeriodInvoiceRequest(
        client_id=ORG, period_start=_period()[0], period_end=_period()[1], currency="USD"
    ),
    "GetMoneySummary": lambda sc: payments_pb2.GetMoneySummaryRequest(job_id=sc.plain_job),
    "GetWorkerBalance": lambda sc: payments_pb2.GetWorkerBalanceRequest(worker_id=WORKER),
    "ListLedgerEntries": lambda sc: payments_pb2.ListLedgerEntriesRequest(job_id=sc.plain_job),
    "VerifyLedger": lambda sc: payments_pb2.VerifyLedgerRequest(),
    "Quote": lambda sc: payments_pb2.QuoteRequest(spec=_spec("quote", target=0.5, review=False), objects=100),
    "SetBudgetCap": lambda sc: payments_pb2.SetBudgetCapRequest(job_id=sc.plain_job, budget_cap_cents=1_000_000),
    "GetWorkerStatement": lambda sc: payments_pb2.GetWorkerStatementRequest(worker_id=WORKER),
    "CreatePayoutBatch": lambda sc: payments_pb2.CreatePayoutBatchRequest(currency="USD", minimum_payout_cents=1),
    # One request id for every role: the second staff call replays the first.
    "AdjustLedger": lambda sc: payments_pb2.AdjustLedgerRequest(
        request_id="matrix-goodwill",
        debit_account="platform:revenue",
        credit_account=f"client:{ORG}:receivable",
        amount_cents=1,
        reason="goodwill credit",
    ),
    "CreateKey": lambda sc: access_pb2.CreateKeyRequest(
        role=access_pb2.ROLE_WORKER, subject=f"w-{uuid.uuid4().hex[:6]}"
    ),
    "ListKeys": lambda sc: access_pb2.ListKeysRequest(),
    "RevokeKey": lambda sc: access_pb2.RevokeKeyRequest(key_id=_throwaway_key(sc)),
    "SetRole": lambda sc: access_pb2.SetRoleRequest(key_id=_throwaway_key(sc), role=access_pb2.ROLE_OPERATOR),
    "SignIn": lambda sc: access_pb2.SignInRequest(),
    "SignOut": lambda sc: access_pb2.SignOutRequest(),
    "ListAuditEvents": lambda sc: access_pb2.ListAuditEventsRequest(),
    "VerifyAuditLog": lambda sc: access_pb2.VerifyAuditLogRequest(),
}


def test_every_rpc_has_a_request_here() -> None:
    missing = sorted({m.name for _, m in METHODS} - REQUESTS.keys())
    assert missing == [], f"add a valid request for {missing}"


def _call(sc: Scenario, service: str, method: d.MethodDescriptor, md: Any) -> None:
    request = REQUESTS[method.name](sc)
    reply = getattr(sc.stub(service), method.name)(request, metadata=md, timeout=30)
    if method.server_streaming:
        list(reply)


def _code(call: Callable[[], None]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.mark.parametrize("service,method", METHODS, ids=[_id(m) for m in METHODS])
def test_each_role_gets_exactly_what_the_policy_allows(
    scenario: Scenario, service: str, method: d.MethodDescriptor
) -> None:
    rule = PROTOS[service][2].rule_for(method.name)
    assert rule is not None
    outcomes = {}
    for role in Role:
        outcomes[role] = _code(lambda role=role: _call(scenario, service, method, scenario.md(role)))  # type: ignore[misc]
    expected = {role: grpc.StatusCode.OK if role in rule else grpc.StatusCode.PERMISSION_DENIED for role in Role}
    assert outcomes == expected


@pytest.mark.parametrize("service,method", METHODS, ids=[_id(m) for m in METHODS])
def test_calls_without_a_valid_key_are_unauthenticated(
    scenario: Scenario, service: str, method: d.MethodDescriptor
) -> None:
    stub = getattr(scenario.stub(service), method.name)
    request = method.input_type._concrete_class()
    arg: Any = iter([request]) if method.client_streaming else request

    def call(md: Any) -> Callable[[], None]:
        def run() -> None:
            reply = stub(arg if not method.client_streaming else iter([request]), metadata=md, timeout=10)
            if method.server_streaming:
                list(reply)

        return run

    forged = scenario.keys[Role.ADMIN][:-6] + "AAAAAA"
    assert _code(call(())) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(call((("authorization", f"Bearer {forged}"),))) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(call((("authorization", "Basic dXNlcjpwYXNz"),))) == grpc.StatusCode.UNAUTHENTICATED


# --- tenant isolation -------------------------------------------------------------------------

UNKNOWN_JOB = "job_00000000000000000000000000"

# Organisation A's client naming organisation B's resources: read, list, export, pay against,
# cancel. Each must look exactly like a resource that does not exist.
FOREIGN: dict[str, Callable[[Scenario, str, str], tuple[str, str, Any]]] = {
    "GetJob": lambda sc, job, task: ("ingest", "GetJob", ingest_pb2.GetJobRequest(job_id=job)),
    "SealJob": lambda sc, job, task: ("ingest", "SealJob", ingest_pb2.SealJobRequest(job_id=job)),
    "DeleteJob": lambda sc, job, task: ("ingest", "DeleteJob", ingest_pb2.DeleteJobRequest(job_id=job)),
    "ImportManifest": lambda sc, job, task: (
        "ingest",
        "ImportManifest",
        ingest_pb2.ImportManifestRequest(job_id=job, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=b"{}"),
    ),
    "UploadFiles": lambda sc, job, task: (
        "ingest",
        "UploadFiles",
        iter([ingest_pb2.UploadChunk(job_id=job, filename="x.txt", data=b"x", end_of_file=True)]),
    ),
    "GetTaskingStats": lambda sc, job, task: (
        "tasking",
        "GetTaskingStats",
        tasking_pb2.GetTaskingStatsRequest(job_id=job),
    ),
    "GetResult": lambda sc, job, task: ("consensus", "GetResult", consensus_pb2.GetResultRequest(task_id=task)),
    "ExportResults": lambda sc, job, task: (
        "consensus",
        "ExportResults",
        consensus_pb2.ExportResultsRequest(job_id=job),
    ),
    "GetJobQuality": lambda sc, job, task: (
        "consensus",
        "GetJobQuality",
        consensus_pb2.GetJobQualityRequest(job_id=job),
    ),
    "GetInvoice": lambda sc, job, task: ("payments", "GetInvoice", payments_pb2.GetInvoiceRequest(job_id=job)),
    "GetMoneySummary": lambda sc, job, task: (
        "payments",
        "GetMoneySummary",
        payments_pb2.GetMoneySummaryRequest(job_id=job),
    ),
    "ListLedgerEntries": lambda sc, job, task: (
        "payments",
        "ListLedgerEntries",
        payments_pb2.ListLedgerEntriesRequest(job_id=job),
    ),
    "SetBudgetCap": lambda sc, job, task: (
        "payments",
        "SetBudgetCap",
        payments_pb2.SetBudgetCapRequest(job_id=job, budget_cap_cents=1),
    ),
}


def _details(sc: Scenario, service: str, method: str, request: Any) -> tuple[grpc.StatusCode, str]:
    try:
        reply = getattr(sc.stub(service), method)(request, metadata=sc.md(Role.CLIENT), timeout=30)
        if method == "ExportResults":
            list(reply)
    except grpc.RpcError as error:
        return error.code(), str(error.details())
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("name", sorted(FOREIGN))
def test_another_organisations_resources_are_not_found(scenario: Scenario, name: str) -> None:
    sc = scenario
    service, method, request = FOREIGN[name](sc, sc.foreign_job, sc.foreign_task)
    code, details = _details(sc, service, method, request)
    assert code == grpc.StatusCode.NOT_FOUND, (name, code, details)
    # Word for word what a made-up id gets, once the id itself is taken out.
    _, _, made_up = FOREIGN[name](sc, UNKNOWN_JOB, "task_00000000000000000000000000")
    unknown_code, unknown_details = _details(sc, service, method, made_up)
    if unknown_code == grpc.StatusCode.NOT_FOUND:
        strip = (sc.foreign_job, sc.foreign_task, UNKNOWN_JOB, "task_00000000000000000000000000")
        for ident in strip:
            details, unknown_details = details.replace(ident, "ID"), unknown_details.replace(ident, "ID")
        assert details == unknown_details


def test_the_other_organisations_job_survives_the_attempts(scenario: Scenario) -> None:
    sc = scenario
    for name in sorted(FOREIGN):
        _details(sc, *FOREIGN[name](sc, sc.foreign_job, sc.foreign_task))
    job = sc.stub("ingest").GetJob(
        ingest_pb2.GetJobRequest(job_id=sc.foreign_job), metadata=sc.md(Role.ADMIN), timeout=10
    )
    assert job.state == ingest_pb2.JOB_STATE_SEALED and job.spec.client_id == OTHER_ORG
    money = sc.stub("payments").GetMoneySummary(
        payments_pb2.GetMoneySummaryRequest(job_id=sc.foreign_job), metadata=sc.md(Role.ADMIN), timeout=10
    )
    assert money.budget_cap_cents == 0


def test_lists_and_new_jobs_stay_inside_the_callers_organisation(scenario: Scenario) -> None:
    sc = scenario
    ingest, md = sc.stub("ingest"), sc.md(Role.CLIENT)
    listed = ingest.ListJobs(ingest_pb2.ListJobsRequest(), metadata=md, timeout=10)
    assert listed.jobs and {j.spec.client_id for j in listed.jobs} == {ORG}
    assert sc.foreign_job not in {j.job_id for j in listed.jobs}
    for call in (
        lambda: ingest.ListJobs(ingest_pb2.ListJobsRequest(client_id=OTHER_ORG), metadata=md, timeout=10),
        lambda: ingest.CreateJob(
            ingest_pb2.CreateJobRequest(spec=_spec("sneaky", target=0.5, review=False, org=OTHER_ORG)),
            metadata=md,
            timeout=10,
        ),
        lambda: sc.stub("payments").GetPeriodInvoice(
            payments_pb2.GetPeriodInvoiceRequest(
                client_id=OTHER_ORG, period_start=_period()[0], period_end=_period()[1]
            ),
            metadata=md,
            timeout=10,
        ),
    ):
        assert _code(call) == grpc.StatusCode.NOT_FOUND
    # Left empty, the organisation is the caller's own.
    created = ingest.CreateJob(
        ingest_pb2.CreateJobRequest(spec=_spec("mine", target=0.5, review=False, org="")), metadata=md, timeout=10
    )
    assert created.spec.client_id == ORG
