"""``quorum demo``: a pilot job end to end on the embedded stack.

Generates a dataset with known answers, starts the stack, submits an image
job and a text job through the public gRPC API, lets a simulated crowd label
them, then checks the labels against the truth, the bill, the pay and the
ledger, and prints a report (one JSON object as the last line with --json).
With ``task`` one of the structured kinds of :data:`quorum.demo.kinds.KINDS`
(``boxes``, ``multi_label``, ``keypoints``, ``segmentation``, ``spans``,
``transcription``, ``pairwise``) it runs one job of that kind on its generated
dataset instead and reports how close the fused labels are to the truth.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc
from tqdm import tqdm

from quorum.client import QuorumClient, UploadFile, jsonl, label_of
from quorum.demo.crowd import CrowdReport, SimulatedCrowd, Truth, WorkerProfile
from quorum.demo.dataset import DemoDataset, DemoObject, generate
from quorum.demo.items import ItemSet
from quorum.demo.kinds import ANNOTATION_CENTS, KINDS, PAY_CENTS, PILOT_ALLOWANCE, PRICE_CENTS, DemoKind, job_spec
from quorum.demo.workers import spammer_count
from quorum.stack import LocalStack
from quorum.tls import ClientTls
from quorum.v1 import common_pb2, consensus_pb2, ingest_pb2

# Prices of the demo's pilot jobs, in cents.
IMAGE_PRICE_CENTS, IMAGE_PAY_CENTS = 10, 2
TEXT_PRICE_CENTS, TEXT_PAY_CENTS = 6, 1
# A bounding-box job's, as every structured kind's (quorum.demo.kinds).
BOX_PRICE_CENTS, BOX_ANNOTATION_CENTS, BOX_PAY_CENTS = PRICE_CENTS, ANNOTATION_CENTS, PAY_CENTS

DemoTask = Literal[
    "classification", "boxes", "multi_label", "keypoints", "segmentation", "spans", "transcription", "pairwise"
]


@dataclass(frozen=True)
class DemoOptions:
    objects: int = 400
    workers: int = 60
    seed: int = 7
    dashboard: bool = False
    keep: bool = False
    json_output: bool = False
    timeout_s: float = 1800.0
    home: Path | None = None
    # How to reach the services when QUORUM_TLS_* in the environment make them serve TLS.
    tls: ClientTls | None = None
    # "classification": an image job and a text job; any other: one job of that kind
    # (quorum.demo.kinds.KINDS).
    task: DemoTask = "classification"


# The fewest simulated workers a demo runs with: each object needs answers from 3 distinct
# workers, with one honest worker to spare beside the spammers (see fit_overlap).
MIN_WORKERS = 5


class DemoFailed(RuntimeError):
    """The demo did not finish: a service died, ingest refused an object, or the crowd did
    not label or the ledger did not bill everything in time."""


def fit_overlap(spec: common_pb2.JobSpec, workers: int) -> common_pb2.JobSpec:
    """``spec`` with its overlap's maximum capped to leave one honest worker to spare. Spammers
    are suspended and a skipped task is never offered to its worker again, so a task that may
    ask for every honest worker of a small crowd can be left with nobody to ask, and its job
    never finishes."""
    honest = workers - spammer_count(workers)
    spec.overlap.max = max(spec.overlap.min, min(spec.overlap.max, honest - 1))
    return spec


def _job_spec(name: str, labels: tuple[str, ...], images: bool) -> common_pb2.JobSpec:
    config = common_pb2.ClassificationConfig(labels=list(labels))
    spec = common_pb2.JobSpec(
        name=name,
        client_id="demo-client",
        instructions="Pick the one label that fits best.",
        overlap=common_pb2.Overlap(min=3, max=7),
        target_confidence=0.95,
        gold_share=0.1,
        price_per_object_cents=IMAGE_PRICE_CENTS if images else TEXT_PRICE_CENTS,
        pay_per_answer_cents=IMAGE_PAY_CENTS if images else TEXT_PAY_CENTS,
        currency="USD",
        pilot=True,
        pilot_allowance=PILOT_ALLOWANCE,
        lease_seconds=60,
    )
    if images:
        spec.image_classification.CopyFrom(config)
    else:
        spec.text_classification.CopyFrom(config)
    return spec


def _submit(client: QuorumClient, dataset: DemoDataset, workers: int, progress: bool) -> dict[str, list[DemoObject]]:
    """Creates the jobs, uploads every object and seals the jobs. Returns objects by job id."""
    jobs: dict[str, list[DemoObject]] = {}
    total = len(dataset.all_objects())
    with tqdm(total=total, desc="upload", unit="obj", file=sys.stderr, disable=not progress) as bar:
        if dataset.images:
            job = client.ingest.CreateJob(
                ingest_pb2.CreateJobRequest(
                    spec=fit_overlap(_job_spec("demo shapes", dataset.image_labels, images=True), workers)
                ),
                timeout=30,
            )
            files = [
                UploadFile(o.name, o.content, o.label if o.gold else "")
                for o in [*dataset.images, *dataset.gold_images]
            ]
            summary = client.upload(job.job_id, files, on_file=lambda: bar.update(1))
            _check_summary(summary, len(files))
            jobs[job.job_id] = dataset.images
        if dataset.texts:
            job = client.ingest.CreateJob(
                ingest_pb2.CreateJobRequest(
                    spec=fit_overlap(_job_spec("demo sentiment", dataset.text_labels, images=False), workers)
                ),
                timeout=30,
            )
            lines = [
                {"id": o.name, "text": o.text, **({"gold_label": o.label} if o.gold else {})}
                for o in [*dataset.texts, *dataset.gold_texts]
            ]
            summary = client.import_manifest(job.job_id, jsonl(lines), ingest_pb2.MANIFEST_FORMAT_JSONL)
            _check_summary(summary, len(lines))
            bar.update(len(lines))
            jobs[job.job_id] = dataset.texts
    for job_id in jobs:
        client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id), timeout=30)
    return jobs


def _check_summary(summary: ingest_pb2.UploadSummary, expected: int) -> None:
    if summary.accepted != expected:
        reasons = [f"{i.name}: {i.reason}" for i in summary.items if i.status != ingest_pb2.ITEM_STATUS_ACCEPTED]
        raise DemoFailed(f"ingest accepted {summary.accepted} of {expected} objects: {reasons[:5]}")


class _Progress:
    """Polls the services for resolved and billed counts; the crowd stops when all are resolved."""

    def __init__(self, client: QuorumClient, job_ids: list[str], objects: int) -> None:
        self.client = client
        self.job_ids = job_ids
        self.objects = objects
        self.resolved = 0
        self.done = threading.Event()

    def poll(self) -> int:
        # A slow answer is not a reason to stop the demo.
        with contextlib.suppress(grpc.RpcError):
            self.resolved = sum(self.client.quality(job_id).resolved for job_id in self.job_ids)
        if self.resolved >= self.objects:
            self.done.set()
        return self.resolved

    def billed(self) -> int:
        total = 0
        for job_id in self.job_ids:
            try:
                total += self.client.money(job_id).objects_billed
            except grpc.RpcError as exc:
                # Payments learns of a job from its JobCreated event and answers NOT_FOUND
                # until then: it has billed nothing for it yet.
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return total


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise DemoFailed(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_demo(options: DemoOptions) -> int:
    """Runs the demo; returns the process exit code (0 when every check passed)."""
    progress = not options.json_output or sys.stderr.isatty()
    say = (lambda *a: print(*a, file=sys.stderr)) if options.json_output else print
    kind = KINDS.get(options.task)
    if kind is None and options.task != "classification":
        raise ValueError(f"task must be 'classification' or one of {', '.join(KINDS)}, got {options.task!r}")
    if options.workers < MIN_WORKERS:
        print(f"quorum demo: --workers must be at least {MIN_WORKERS}, got {options.workers}", file=sys.stderr)
        return 2
    dataset = kind.generate(options.objects, options.seed) if kind else generate(options.objects, options.seed)
    home = options.home or Path(tempfile.mkdtemp(prefix="quorum-demo-"))
    stack = LocalStack(home=home, dashboard=options.dashboard, tls=options.tls)
    say(f"starting the embedded stack in {home} ...")
    try:
        stack.start()
    except RuntimeError as exc:
        print(f"quorum demo: {exc}", file=sys.stderr)
        return 1
    say(stack.transport_notice())
    try:
        if stack.dashboard_url:
            say(f"dashboard: {stack.dashboard_url}")
        with QuorumClient(stack.addresses, api_key=stack.api_key, tls=options.tls) as client:
            if isinstance(dataset, DemoDataset):
                return _run(options, dataset, stack, client, progress, say)
            return _run_kind(options, KINDS[options.task], dataset, stack, client, progress, say)
    except DemoFailed as exc:
        # An unfinished run is an outcome to report, not a crash.
        print(f"quorum demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        if not options.keep and options.home is None:
            shutil.rmtree(home, ignore_errors=True)
        elif options.keep:
            say(f"data kept in {home}")


def _run(
    options: DemoOptions,
    dataset: DemoDataset,
    stack: LocalStack,
    client: QuorumClient,
    progress: bool,
    say: Any,
) -> int:
    started = time.monotonic()
    jobs = _submit(client, dataset, options.workers, progress)
    objects = sum(len(v) for v in jobs.values())
    crowd, crowd_report, labeled_at = _label(options, stack, client, dataset.truth_by_key(), jobs, progress)
    report = _report(options, dataset, client, jobs, crowd_report, crowd.profiles, labeled_at - started)
    return _finish(options, report, objects, say)


def _label(
    options: DemoOptions,
    stack: LocalStack,
    client: QuorumClient,
    truth: Mapping[str, Truth],
    jobs: Mapping[str, Sequence[object]],
    progress: bool,
) -> tuple[SimulatedCrowd, CrowdReport, float]:
    """Runs the simulated crowd until every object of ``jobs`` (objects by job id) is resolved,
    then waits until each is billed. Returns the crowd, its report and the monotonic time at
    which the last object was resolved. Raises DemoFailed when a service dies, or when the
    objects are not resolved in time or not billed within 60 s."""
    objects = sum(len(v) for v in jobs.values())
    tracker = _Progress(client, list(jobs), objects)
    crowd = SimulatedCrowd(
        stack.address("tasking"),
        truth,
        options.workers,
        options.seed,
        channels=4,
        max_retry_ms=300,
        tls=options.tls,
    )
    crowd.authorize(client.issue_worker_keys(p.worker_id for p in crowd.profiles))
    outcome: list[CrowdReport] = []
    crowd_thread = threading.Thread(
        target=lambda: outcome.append(crowd.run(tracker.done.is_set, options.timeout_s)), daemon=True
    )
    crowd_thread.start()
    with tqdm(total=objects, desc="labeled", unit="obj", file=sys.stderr, disable=not progress) as bar:
        while crowd_thread.is_alive():
            resolved = tracker.poll()
            bar.update(resolved - bar.n)
            if dead := stack.check_alive():
                tracker.done.set()
                raise DemoFailed(f"{dead} exited:\n{stack.log_tail(dead[0])}")
            crowd_thread.join(0.5)
    tracker.poll()
    if tracker.resolved < objects:
        raise DemoFailed(f"only {tracker.resolved} of {objects} objects resolved in {options.timeout_s:.0f} s")
    labeled_at = time.monotonic()
    # Billing trails resolution by one Kafka hop.
    _wait(lambda: tracker.billed() >= objects, 60, "payments to bill every object")
    return crowd, outcome[0], labeled_at


def _finish(
    options: DemoOptions,
    report: dict[str, Any],
    objects: int,
    say: Any,
    show: Callable[[dict[str, Any], Any], None] | None = None,
) -> int:
    """Prints the report with ``show`` (:func:`_print_human` by default); the exit code is 0
    when the ledger balances and every object was labeled."""
    (show or _print_human)(report, say)
    if options.json_output:
        print(json.dumps(report["summary"]))
    checks_ok = report["summary"]["ledger_balanced"] and report["summary"]["objects"] == objects
    return 0 if checks_ok else 1


def _report(
    options: DemoOptions,
    dataset: DemoDataset,
    client: QuorumClient,
    jobs: dict[str, list[DemoObject]],
    crowd: CrowdReport,
    profiles: list[WorkerProfile],
    seconds: float,
) -> dict[str, Any]:
    truth = {o.name: o.label for o in dataset.all_objects()}
    labeled = correct_consensus = correct_majority = answers = low_confidence = 0
    for job_id in jobs:
        for result in client.results(job_id):
            labeled += 1
            answers += len(result.answers)
            low_confidence += result.low_confidence
            correct_consensus += label_of(result.label) == truth[result.object_name]
            correct_majority += label_of(result.majority_label) == truth[result.object_name]
    workers = client.consensus.ListWorkers(consensus_pb2.ListWorkersRequest(), timeout=10).workers
    summary = {
        **_pace(labeled, answers, seconds),
        "accuracy": {
            "majority_vote": round(correct_majority / labeled, 4) if labeled else 0.0,
            "consensus": round(correct_consensus / labeled, 4) if labeled else 0.0,
        },
        "low_confidence": low_confidence,
        "workers": options.workers,
        "crowd_answers": crowd.answers,
        "crowd_call_errors": crowd.errors_by_call,
        **_money(client, list(jobs)),
    }
    return {"summary": summary, "workers": workers, "profiles": {p.worker_id: p for p in profiles}}


def _pace(labeled: int, answers: int, seconds: float) -> dict[str, Any]:
    """Objects labeled, in how long, and the answers they took, for a report's summary."""
    return {
        "objects": labeled,
        "seconds": round(seconds, 2),
        "objects_per_second": round(labeled / seconds, 2) if seconds else 0.0,
        "answers": answers,
        "answers_per_object": round(answers / labeled, 3) if labeled else 0.0,
    }


def _money(client: QuorumClient, job_ids: list[str]) -> dict[str, Any]:
    """The bill, the pay and the ledger check of ``job_ids``, for a report's summary."""
    money = [client.money(job_id) for job_id in job_ids]
    invoices = [client.invoice(job_id) for job_id in job_ids]
    ledger = client.verify_ledger()
    billed = sum(m.billed_cents for m in money)
    paid = sum(m.paid_cents for m in money)
    return {
        "billed_cents": billed,
        "paid_cents": paid,
        "margin_cents": billed - paid,
        "pilot_subsidy_cents": sum(m.pilot_subsidy_cents for m in money),
        "invoice_total_cents": sum(i.total_cents for i in invoices),
        "ledger_balanced": bool(ledger.balanced and not ledger.problems),
    }


def _print_human(report: dict[str, Any], say: Any) -> None:
    s = report["summary"]
    say("")
    say("Quorum pilot demo")
    say(f"  objects labeled      {s['objects']} in {s['seconds']} s ({s['objects_per_second']} objects/s)")
    say(
        f"  answers              {s['answers']} ({s['answers_per_object']} per object), {s['crowd_answers']} from the crowd incl. gold"
    )
    say(
        f"  accuracy vs truth    consensus {s['accuracy']['consensus']:.2%}, majority vote {s['accuracy']['majority_vote']:.2%}"
    )
    _print_confidence_and_money(s, say)
    profiles = report["profiles"]
    workers = sorted(report["workers"], key=lambda w: w.reliability)
    if workers:
        say("  least reliable workers (estimated reliability / true accuracy):")
        for w in workers[:5]:
            p = profiles.get(w.worker_id)
            kind = "spammer" if p and p.spammer else f"{p.accuracy:.2f}" if p else "?"
            say(f"    {w.worker_id:<16} {w.reliability:.2f} / {kind}  ({w.answers} answers)")


def _print_confidence_and_money(s: dict[str, Any], say: Any) -> None:
    say(f"  low confidence       {s['low_confidence']}")
    if s["crowd_call_errors"]:
        # Listed only when some failed, so that a slow run says whether the crowd was turned away.
        failed = ", ".join(f"{call} x{n}" for call, n in sorted(s["crowd_call_errors"].items()))
        say(f"  crowd calls failed   {failed}")
    say(
        f"  billed               ${s['billed_cents'] / 100:,.2f} (pilot subsidy ${s['pilot_subsidy_cents'] / 100:,.2f})"
    )
    say(f"  paid to workers      ${s['paid_cents'] / 100:,.2f}; margin ${s['margin_cents'] / 100:,.2f}")
    say(f"  ledger               {'balanced' if s['ledger_balanced'] else 'NOT BALANCED'}")


# --------------------------------------------------------------------------- structured kinds


def box_job_spec(labels: tuple[str, ...]) -> common_pb2.JobSpec:
    """The demo's bounding-box job: a pilot, priced per object and per fused box."""
    return job_spec(KINDS["boxes"], labels)


def submit_kind(
    client: QuorumClient,
    kind: DemoKind,
    dataset: ItemSet[Any],
    on_file: Callable[[], None] | None = None,
    workers: int | None = None,
) -> str:
    """Creates the job of ``kind`` (:func:`~quorum.demo.kinds.job_spec`), uploads every object
    of ``dataset`` as a file (calling ``on_file`` after each) and seals the job, its overlap fitted
    to a crowd of ``workers`` when given. Returns the job id. Raises DemoFailed when ingest
    refuses an object."""
    spec = job_spec(kind, dataset.labels)
    if workers is not None:
        fit_overlap(spec, workers)
    job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=30).job_id
    summary = client.upload(job, [UploadFile(item.name, item.data) for item in dataset.items], on_file=on_file)
    _check_summary(summary, len(dataset.items))
    client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job), timeout=30)
    return job


def score_results(kind: DemoKind, dataset: ItemSet[Any], results: Sequence[Any]) -> dict[str, Any]:
    """The quality figures of ``kind`` (:attr:`~quorum.demo.kinds.DemoKind.score`) for exported
    ``results`` (``TaskResult`` messages of the job) against the truth of ``dataset``."""
    truth = dataset.truth_by_name()
    return kind.score([(result.label, truth[result.object_name]) for result in results])


def _run_kind(
    options: DemoOptions,
    kind: DemoKind,
    dataset: ItemSet[Any],
    stack: LocalStack,
    client: QuorumClient,
    progress: bool,
    say: Any,
) -> int:
    started = time.monotonic()
    with tqdm(total=len(dataset.items), desc="upload", unit="obj", file=sys.stderr, disable=not progress) as bar:
        job = submit_kind(client, kind, dataset, on_file=lambda: bar.update(1), workers=options.workers)
    _, crowd, labeled_at = _label(options, stack, client, dataset.truth_by_key(), {job: dataset.items}, progress)
    results = list(client.results(job))
    summary = {
        "task": kind.name,
        "seed": options.seed,
        **_pace(len(results), sum(len(r.answers) for r in results), labeled_at - started),
        "quality": score_results(kind, dataset, results),
        "low_confidence": sum(r.low_confidence for r in results),
        "workers": options.workers,
        "crowd_answers": crowd.answers,
        "crowd_call_errors": crowd.errors_by_call,
        **_money(client, [job]),
    }

    def show(report: dict[str, Any], say: Any) -> None:
        s = report["summary"]
        say("")
        say(f"Quorum {kind.title} demo")
        say(
            f"  {kind.noun + ' labeled':<21}{s['objects']} in {s['seconds']} s ({s['objects_per_second']} {kind.noun}/s)"
        )
        say(f"  answers              {s['answers']} ({s['answers_per_object']} per object), seed {s['seed']}")
        for line in kind.describe(s["quality"]):
            say(f"  {line}")
        _print_confidence_and_money(s, say)

    return _finish(options, {"summary": summary}, len(dataset.items), say, show)
