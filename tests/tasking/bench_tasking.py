"""Benchmark of the tasking service: GetNextTask + SubmitAnswer under many workers.

Starts an embedded Tansu broker (unless --kafka is given) and the tasking service in
a process of its own (as deployed: the client threads must not share its GIL),
loads N tasks through Kafka (the consumer path), then drives K worker threads, each
with its own session, through GetNextTask and SubmitAnswer until every task has its
answers. Every worker signs in (StartSession) before the work starts, and the sign-in
is timed apart: it holds each API key's first check in the process. Prints throughput and
latency percentiles per RPC; GetNextTask calls that found nothing (mostly at the end,
when the last tasks are leased to others) are counted apart from those that handed out
a task.

    .venv/bin/python tests/tasking/bench_tasking.py --tasks 2000 --workers 100 --overlap 3
    .venv/bin/python tests/tasking/bench_tasking.py --think-ms 500   # workers that read first

With no think time the workers saturate the service and the latencies are mostly
queueing; ``--think-ms`` (a uniform pause of 0-2x that before each answer) models
people and shows the latency of one call at a given load.

Not collected by pytest (the file name does not start with test_).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc

from quorum.broker import EmbeddedBroker
from quorum.db import make_engine
from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.security import keys
from quorum.security.keyhash import load_key_hasher
from quorum.security.principal import Role
from quorum.service import keep_start_up_out_of_collections, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, tasking_pb2, tasking_pb2_grpc
from services.tasking.bootstrap import build


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load(settings: Settings, job_id: str, tasks: int, overlap: int) -> None:
    topics = Topics(settings.topic_prefix)
    spec = common_pb2.JobSpec(
        name="bench",
        text_classification=common_pb2.ClassificationConfig(labels=["positive", "negative", "neutral"]),
        overlap=common_pb2.Overlap(min=overlap, max=overlap),
        lease_seconds=60,
    )
    job = events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))
    records = [outgoing(topics.jobs, job_id, job)]
    for i in range(tasks):
        task_id = f"{job_id}-{i:06d}"
        created = events_pb2.TaskCreated(
            task_id=task_id, job_id=job_id, content_type="text/plain", text=f"review number {i}: it was fine"
        )
        records.append(
            outgoing(topics.tasks, task_id, events_pb2.Event(event_id=uuid.uuid4().hex, task_created=created))
        )
    publisher = Publisher(settings.require_kafka(), linger_ms=5)
    try:
        publisher.send_all(records)
    finally:
        publisher.close()


def issue_keys(settings: Settings, workers: int) -> tuple[str, list[str]]:
    """An operator key (for the stats) and a worker key per worker, as call metadata values."""
    engine = make_engine(settings.access_database())
    try:
        keys.metadata.create_all(engine)
        store = keys.KeyStore(engine, load_key_hasher(settings))
        _, operator = store.create(Role.OPERATOR, name="bench operator")
        workers_keys = [store.create(Role.WORKER, subject=f"bench-w{i:03d}")[1] for i in range(workers)]
    finally:
        engine.dispose()
    return operator, workers_keys


def bearer(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def serve(settings: Settings, ports: multiprocessing.Queue, stop: multiprocessing.Event) -> None:  # type: ignore[type-arg]
    """Runs the service in a child process until ``stop`` is set."""
    running = start_service(build, settings, address="127.0.0.1:0")
    keep_start_up_out_of_collections()  # as quorum serve does
    ports.put(running.port)
    try:
        stop.wait()
    finally:
        running.stop()
        print(f"CPU of the service process: {time.process_time():.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--channels", type=int, default=4, help="gRPC channels shared by the worker threads")
    parser.add_argument("--kafka", help="bootstrap of a running broker (default: start an embedded one)")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--redis-url", help="default: leases in the service process's memory")
    parser.add_argument("--grpc-workers", type=int, default=Settings().grpc_workers, help="server threads")
    parser.add_argument("--think-ms", type=float, default=0.0, help="mean pause before each answer")
    args = parser.parse_args()

    broker = None if args.kafka else EmbeddedBroker().start()
    spawn = multiprocessing.get_context("spawn")
    stop = spawn.Event()
    server = None
    channels: list[grpc.Channel] = []
    try:
        settings = Settings(
            home=Path(tempfile.mkdtemp(prefix="bench-tasking-")),
            kafka_bootstrap=args.kafka or broker.bootstrap,  # type: ignore[union-attr]
            topic_prefix=f"bench{uuid.uuid4().hex[:8]}",
            kafka_partitions=3,
            database_url=args.database_url,
            redis_url=args.redis_url,
            grpc_workers=args.grpc_workers,
        )
        ports: multiprocessing.Queue = spawn.Queue()  # type: ignore[type-arg]
        server = spawn.Process(target=serve, args=(settings, ports, stop), name="tasking")
        server.start()
        port = ports.get(timeout=60)
        operator_key, worker_keys = issue_keys(settings, args.workers)
        operator = bearer(operator_key)
        # Keys go with each call, so that workers can share a few channels.
        channels = [channel(f"127.0.0.1:{port}") for _ in range(args.channels)]
        stubs = [tasking_pb2_grpc.TaskingServiceStub(ch) for ch in channels]
        started = time.perf_counter()
        load(settings, "bench-job", args.tasks, args.overlap)
        stats_request = tasking_pb2.GetTaskingStatsRequest()
        while stubs[0].GetTaskingStats(stats_request, timeout=5, metadata=operator).backlog < args.tasks:
            time.sleep(0.05)
        print(f"loaded {args.tasks} tasks through Kafka in {time.perf_counter() - started:.2f} s")

        wanted = args.tasks * args.overlap
        answered = 0
        lock = threading.Lock()
        next_ms: list[float] = []
        empty_ms: list[float] = []
        submit_ms: list[float] = []
        session_ms: list[float] = []
        # Everyone signs in first, so that the first check of each API key (a database read
        # and a hash, once per key and process) is timed apart from the work.
        signed_in = threading.Barrier(args.workers + 1)
        empty = 0
        errors: dict[str, int] = {}
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="positive"))

        def worker(i: int) -> None:
            nonlocal answered, empty
            stub = stubs[i % len(stubs)]
            auth = bearer(worker_keys[i])
            rng = random.Random(i)
            start = tasking_pb2.StartSessionRequest(worker_id=f"bench-w{i:03d}")
            t0 = time.perf_counter()
            session = stub.StartSession(start, metadata=auth).session_id
            with lock:
                session_ms.append((time.perf_counter() - t0) * 1000)
            signed_in.wait()
            # People do not all click at once: spread the first requests over one think time.
            time.sleep(rng.uniform(0, 2 * args.think_ms) / 1000)
            mine_next: list[float] = []
            mine_empty: list[float] = []
            mine_submit: list[float] = []
            while True:
                with lock:
                    if answered >= wanted:
                        break
                t0 = time.perf_counter()
                response = stub.GetNextTask(
                    tasking_pb2.GetNextTaskRequest(session_id=session), timeout=10, metadata=auth
                )
                took_ms = (time.perf_counter() - t0) * 1000
                if not response.HasField("task"):
                    mine_empty.append(took_ms)
                    with lock:
                        empty += 1
                    time.sleep(response.retry_after_ms / 1000)
                    continue
                mine_next.append(took_ms)
                if args.think_ms:
                    time.sleep(rng.uniform(0, 2 * args.think_ms) / 1000)
                t0 = time.perf_counter()
                try:
                    stub.SubmitAnswer(
                        tasking_pb2.SubmitAnswerRequest(
                            session_id=session, lease_id=response.task.lease_id, answer=answer
                        ),
                        timeout=10,
                        metadata=auth,
                    )
                except grpc.RpcError as exc:
                    with lock:
                        errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                mine_submit.append((time.perf_counter() - t0) * 1000)
                with lock:
                    answered += 1
            with lock:
                next_ms.extend(mine_next)
                empty_ms.extend(mine_empty)
                submit_ms.extend(mine_submit)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
        sign_in_started = time.perf_counter()
        for thread in threads:
            thread.start()
        signed_in.wait()
        print(f"{args.workers} workers signed in in {time.perf_counter() - sign_in_started:.2f} s")
        client_cpu_start = time.process_time()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started

        client_cpu = time.process_time() - client_cpu_start
        stats = stubs[0].GetTaskingStats(stats_request, timeout=5, metadata=operator)
        print(
            f"{args.workers} workers answered {answered} times ({args.tasks} tasks x {args.overlap}) in {elapsed:.2f} s: "
            f"{answered / elapsed:.0f} answers/s, {(len(next_ms) + len(empty_ms) + len(submit_ms)) / elapsed:.0f} RPC/s"
        )
        print(f"empty GetNextTask: {empty}; submit errors: {errors or 'none'}; answers stored: {stats.answers}")
        print(f"CPU of this client process: {client_cpu:.1f} s over {elapsed:.1f} s (the service has the rest)")
        # Empty answers come mostly at the end, when the last tasks are leased to others.
        for name, values in (
            ("StartSession", session_ms),
            ("GetNextTask", next_ms),
            ("  (empty)", empty_ms),
            ("SubmitAnswer", submit_ms),
        ):
            if not values:
                continue
            print(
                f"{name:<13} n={len(values):>6}  mean={statistics.fmean(values):6.2f} ms  "
                f"p50={percentile(values, 0.50):6.2f}  p95={percentile(values, 0.95):6.2f}  "
                f"p99={percentile(values, 0.99):6.2f} ms"
            )
    finally:
        for ch in channels:
            ch.close()
        stop.set()
        if server is not None:
            server.join(timeout=30)
            if server.is_alive():
                server.terminate()
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
