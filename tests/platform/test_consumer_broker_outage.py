"""A consumer outlives a broker that goes away for a while: the service's watchdog
exits the process when a consumer dies, so an outage must not kill it."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from quorum.broker import EmbeddedBroker
from quorum.messaging import EventConsumer, Publisher, Topics, ensure_topics, outgoing
from quorum.v1 import events_pb2

pytestmark = [pytest.mark.timeout(120)]


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
