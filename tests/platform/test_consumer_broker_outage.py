"""A consumer outlives a broker that goes away for a while: the service's watchdog
exits the process when a consumer dies, so an outage must not kill it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quorum.broker import EmbeddedBroker
from quorum.messaging import EventConsumer, Publisher, Topics, ensure_topics, outgoing
from quorum.v1 import events_pb2

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def task_event(task_id: str) -> events_pb2.Event:
    return events_pb2.Event(event_id=task_id, task_created=events_pb2.TaskCreated(task_id=task_id, job_id="job"))


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def publish(bootstrap: str, topic: str, task_id: str) -> None:
    publisher = Publisher(bootstrap, linger_ms=0)
    try:
        publisher.send_all([outgoing(topic, task_id, task_event(task_id))])
    finally:
        publisher.close()


def test_a_consumer_survives_the_broker_going_away_and_coming_back_empty(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    topics = Topics("outage")
    ensure_topics(broker.bootstrap, [topics.tasks], partitions=3)
    seen: list[str] = []
    consumer = EventConsumer(
        broker.bootstrap,
        "outage.test",
        [topics.tasks],
        lambda events: seen.extend(e.task_created.task_id for e in events),
        name="outage",
    )
    consumer.start()
    try:
        publish(broker.bootstrap, topics.tasks, "before")
        wait_until(lambda: "before" in seen, "the event before the outage")

        # Outages of several lengths, each met at another point of the consumer's cycle.
        for i, down_s in enumerate((0.5, 3.0)):
            broker.stop()
            time.sleep(down_s)
            assert consumer.alive, f"the consumer died with the broker: {consumer.error!r}"
            broker = EmbeddedBroker(port=broker.port, log_path=tmp_path / "broker.log").start()
            # Memory storage: the topics and the group's offsets are gone with the old broker.
            ensure_topics(broker.bootstrap, [topics.tasks], partitions=3)
            after = f"after-{i}"
            publish(broker.bootstrap, topics.tasks, after)
            wait_until(lambda: after in seen, f"the event after outage {i}", timeout=60)  # noqa: B023 - waited for here
        assert consumer.alive and consumer.error is None
    finally:
        consumer.stop()
        broker.stop()


def test_a_consumer_survives_a_commit_that_fails_because_the_broker_went_away(tmp_path: Path) -> None:
    """The broker stops while the handler holds the first batch, so the commit that follows
    meets no broker and gives up: the consumer must carry on and read what comes next."""
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    topics = Topics("commit")
    ensure_topics(broker.bootstrap, [topics.tasks], partitions=3)
    holding, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def handler(events: list[events_pb2.Event]) -> None:
        if not seen:
            holding.set()
            release.wait(30)
        seen.extend(e.task_created.task_id for e in events)

    consumer = EventConsumer(broker.bootstrap, "commit.test", [topics.tasks], handler, "commit", commit_timeout_ms=500)
    consumer.start()
    try:
        publish(broker.bootstrap, topics.tasks, "before")
        assert holding.wait(30), "the first batch never reached the handler"
        broker.stop()
        release.set()
        wait_until(lambda: consumer.commit_failures >= 1 or not consumer.alive, "the commit to fail")
        assert consumer.alive, f"the consumer died on the failed commit: {consumer.error!r}"

        broker = EmbeddedBroker(port=broker.port, log_path=tmp_path / "broker.log").start()
        ensure_topics(broker.bootstrap, [topics.tasks], partitions=3)
        publish(broker.bootstrap, topics.tasks, "after")
        wait_until(lambda: "after" in seen, "the event after the failed commit", timeout=60)
        assert seen[0] == "before" and consumer.alive and consumer.error is None
    finally:
        release.set()
        consumer.stop()
        broker.stop()
