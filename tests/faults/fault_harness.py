"""A pilot job driven through the real stack (each service its own process) while a
fault is injected, and the checks every fault test ends with.

A run: create a text job, import half its objects, (fault point ``"ingest"``), start a
simulated crowd, import the other half and seal, wait until a third of the objects
are resolved, (fault point ``"mid"``), wait until every object is resolved and every
accepted answer is paid. Then :func:`check_outcome`: one label per object, answers
counted once by tasking, consensus and payments alike, the ledger balanced.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from quorum.client import QuorumClient, jsonl
from quorum.demo.crowd import CrowdReport, SimulatedCrowd
from quorum.demo.dataset import DemoDataset, generate
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, ingest_pb2

PRICE, PAY = 10, 2
FaultPoint = Literal["ingest", "mid"]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, poll_s: float = 0.25) -> float:
    """Polls ``condition`` (exceptions count as False) until it holds; returns the seconds
    waited. Raises AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while True:
        try:
            if condition():
                return time.monotonic() - start
        except Exception:  # a service being restarted answers UNAVAILABLE for a moment
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll_s)


def job_spec(labels: tuple[str, ...], lease_seconds: int) -> common_pb2.JobSpec:
    job = common_pb2.JobSpec(
        name="faults",
        client_id="acme",
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        gold_share=0.1,
        price_per_object_cents=PRICE,
        pay_per_answer_cents=PAY,
        lease_seconds=lease_seconds,
    )
    job.text_classification.CopyFrom(common_pb2.ClassificationConfig(labels=list(labels)))
    return job


@dataclass
class FaultRun:
    """What a finished run hands to the checks."""

    stack: LocalStack
    client: QuorumClient
    dataset: DemoDataset
    job_id: str
    crowd: CrowdReport
    timings: dict[str, float] = field(default_factory=dict)


def run_job_with_fault(
    stack: LocalStack,
    fault: Callable[[LocalStack, QuorumClient], None],
    at: FaultPoint = "mid",
    *,
    n_objects: int = 50,
    # A worker who held a task is never offered it again, and a fault can leave several
    # leases lost at once: with 8 workers and overlap up to 5, a task could be left with no
    # eligible worker. Ten keep the job able to finish, as a real crowd's size does.
    workers: int = 10,
    think_time_ms: tuple[int, int] = (400, 1000),
    lease_seconds: int = 6,
    seed: int = 3,
    resolve_timeout: float = 120.0,
    before_crowd: Callable[[LocalStack, QuorumClient, str], None] | None = None,
) -> FaultRun:
    """Runs one job on a started ``stack`` and calls ``fault(stack, client)`` at ``at``.
    Raises AssertionError when the job does not finish in time."""
    timings: dict[str, float] = {}
    started = time.monotonic()
    client = QuorumClient(stack.addresses, api_key=stack.api_key)
    dataset = generate(n_objects, seed=seed, kind="text")
    job_id = client.ingest.CreateJob(
        ingest_pb2.CreateJobRequest(spec=job_spec(dataset.text_labels, lease_seconds))
    ).job_id
    lines = [
        {"id": o.name, "text": o.text, **({"gold_label": o.label} if o.gold else {})}
        for o in dataset.texts + dataset.gold_texts
    ]
    half = len(dataset.texts) // 2
    client.import_manifest(job_id, jsonl(lines[:half]), ingest_pb2.MANIFEST_FORMAT_JSONL)
    if at == "ingest":
        fault(stack, client)
        timings["fault_at_s"] = time.monotonic() - started
    if before_crowd is not None:
        before_crowd(stack, client, job_id)

    done = threading.Event()
    crowd = SimulatedCrowd(
        stack.address("tasking"),
        dataset.truth_by_key(),
        workers,
        seed=seed,
        think_time_ms=think_time_ms,
        max_retry_ms=300,
        rpc_timeout_s=3.0,
        job_id=job_id,
    )
    crowd.authorize(client.issue_worker_keys(p.worker_id for p in crowd.profiles))
    outcome: list[Any] = []
    thread = threading.Thread(target=lambda: outcome.append(crowd.run(done.is_set, resolve_timeout + 60)))
    thread.start()
    try:
        wait_until(
            lambda: client.import_manifest(job_id, jsonl(lines[half:]), ingest_pb2.MANIFEST_FORMAT_JSONL) is not None,
            60,
            "the second import",
            poll_s=0.5,
        )
        wait_until(
            lambda: client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id), timeout=5) is not None,
            60,
            "sealing",
        )
        objects = len(dataset.texts)
        if at == "mid":
            wait_until(lambda: client.quality(job_id).resolved >= objects // 3, resolve_timeout, "a third resolved")
            timings["fault_at_s"] = time.monotonic() - started
            fault(stack, client)
        fault_done = time.monotonic()
        wait_until(lambda: client.quality(job_id).resolved >= objects, resolve_timeout, "every object resolved")
        timings["recovery_s"] = time.monotonic() - fault_done
    finally:
        timings["resolved_s"] = time.monotonic() - started
        done.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the crowd did not stop"
    timings["crowd_stopped_s"] = time.monotonic() - started
    # Pay trails answers by one Kafka hop; tasking's database is the record of accepted answers.
    wait_until(lambda: settled(client, job_id) >= client.tasking_stats(job_id).answers, 60, "every answer settled")
    timings["paid_s"] = time.monotonic() - started
    wait_until(
        lambda: (
            client.quality(job_id).answers + client.quality(job_id).gold_answers >= client.tasking_stats(job_id).answers
        ),
        60,
        "consensus to count every accepted answer",
    )
    timings["total_s"] = time.monotonic() - started
    return FaultRun(stack, client, dataset, job_id, outcome[0], timings)


def settled(client: QuorumClient, job_id: str) -> int:
    """Answers of the job payments has settled, paid or unpaid."""
    money = client.money(job_id)
    return int(money.answers_paid + money.answers_unpaid)


def check_outcome(run: FaultRun) -> None:
    """The invariants every fault must leave intact."""
    client, job_id = run.client, run.job_id
    results = list(client.results(job_id))
    names = [r.object_name for r in results]
    assert len(names) == len(set(names)), "an object has more than one final label"
    assert sorted(names) == sorted(o.name for o in run.dataset.texts), "an object has no final label"
    for result in results:
        workers = [a.worker_id for a in result.answers]
        assert len(workers) == len(set(workers)), f"{result.object_name}: one worker counted twice"

    tasking = client.tasking_stats(job_id)
    quality = client.quality(job_id)
    money = client.money(job_id)
    # Every answer tasking accepted reached consensus and payments exactly once.
    assert quality.answers + quality.gold_answers == tasking.answers, (quality, tasking.answers)
    # Each accepted answer settled once: paid, or unpaid with a reason (spammer, rejected).
    assert money.answers_paid + money.answers_unpaid == tasking.answers, (money, tasking.answers)
    assert money.paid_cents == money.answers_paid * PAY
    assert money.objects_billed == len(run.dataset.texts)
    # The crowd counts only answers it saw acknowledged; a crash may drop an acknowledgement.
    assert run.crowd.answers <= tasking.answers
    # Results name each answer once, and consensus never saw more answers than tasking accepted.
    assert sum(len(r.answers) for r in results) <= quality.answers
    verification = client.verify_ledger()
    assert verification.balanced, list(verification.problems)
    assert not verification.problems
    assert run.stack.check_alive() == [], f"dead children: {run.stack.check_alive()}"
