"""Backpressure from consumer lag: how far the consumer groups that read what a service
produces are behind, read in the background, and whether the service should refuse new
work meanwhile.

A service whose readers fall behind would otherwise go on accepting work that piles up
on the broker (in memory, for the embedded broker) faster than it is processed.
:class:`LagMonitor` reads the lag every few seconds in its own thread and keeps the
answer, so a request asks it without touching the broker.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import OffsetSpec

log = logging.getLogger(__name__)

# The longest wait a refusal suggests: past it, clients should come back and look again.
MAX_RETRY_AFTER_MS = 30_000


@dataclass(frozen=True)
class Downstream:
    """A consumer of another service that reads topics this service produces, named as
    its group is (``<service>.<consumer>``, see :meth:`quorum.messaging.Topics.group`)."""

    consumer: str
    topics: tuple[str, ...]


def partition_lag(committed: int | None, earliest: int, latest: int) -> int:
    """Records of one partition a group has not consumed: from its committed offset (or the
    start of the partition when it has committed nothing yet) to the end. Never negative."""
    start = earliest if committed is None or committed < 0 else committed
    return max(0, latest - start)


def retry_after_ms(excess: int, drained_per_s: float | None, interval_s: float) -> int:
    """How long a refused caller should wait: the time the consumers need, at the rate they
    drained since the last reading, to get ``excess`` records below the limit; at least
    one reading interval (nothing changes before) and at most :data:`MAX_RETRY_AFTER_MS`.
    Without a draining rate (a first reading, or lag that grew) one interval."""
    floor_ms = max(1, round(interval_s * 1000))
    if drained_per_s is None or drained_per_s <= 0:
        return min(floor_ms, MAX_RETRY_AFTER_MS)
    return min(max(floor_ms, round(excess / drained_per_s * 1000)), MAX_RETRY_AFTER_MS)


class ConsumerLagReader:
    """Reads, with the Kafka admin API, how many records each consumer group has not yet
    consumed of its topics: the end offset of every partition minus the group's committed
    offset (or minus the partition's start, for a group that committed nothing).

    On brokers whose ListOffsets "latest" answers the base offset of the last batch plus
    one (Tansu), the end of a partition is taken as the larger of that and every watched
    group's committed offset; lag may then be underestimated by the records of one
    producer batch per partition (at most 16 KB of events with the default producer).

    Costs a Metadata request, two ListOffsets and one OffsetFetch per group per call, on
    one admin connection kept open between calls; not thread-safe.
    """

    def __init__(self, bootstrap: str, request_timeout_ms: int = 3000) -> None:
        self._bootstrap = bootstrap
        self._request_timeout_ms = request_timeout_ms
        self._admin: KafkaAdminClient | None = None

    def _client(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                bootstrap_servers=self._bootstrap,
                request_timeout_ms=self._request_timeout_ms,
                bootstrap_timeout_ms=self._request_timeout_ms,
                reconnect_backoff_max_ms=1000,
            )
        return self._admin

    def read(self, groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
        """``{group: records behind}`` for each ``group -> topics`` given. Raises
        KafkaError (or OSError) when the broker does not answer; the next call reconnects."""
        try:
            return self._read(groups)
        except Exception:
            self.close()
            raise

    def _read(self, groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
        admin = self._client()
        topics = sorted({t for names in groups.values() for t in names})
        described = admin.describe_topics(topics)
        partitions = [
            TopicPartition(str(topic["name"]), int(p["partition_index"]))
            for topic in described
            for p in topic["partitions"]
        ]
        earliest = admin.list_partition_offsets({tp: OffsetSpec.EARLIEST for tp in partitions})
        latest = admin.list_partition_offsets({tp: OffsetSpec.LATEST for tp in partitions})
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group, names in groups.items():
            wanted = [tp for tp in partitions if tp.topic in names]
            # One group per request: brokers before OffsetFetch v8 take no more.
            fetched = admin.list_group_offsets({group: wanted}).get(group, {})
            committed[group] = {tp: int(meta.offset) for tp, meta in fetched.items()}
        end = {tp: int(latest[tp].offset) for tp in partitions}
        for offsets in committed.values():
            for tp, offset in offsets.items():
                end[tp] = max(end.get(tp, 0), offset)
        return {
            group: sum(
                partition_lag(committed[group].get(tp), int(earliest[tp].offset), end[tp])
                for tp in partitions
                if tp.topic in names
            )
            for group, names in groups.items()
        }

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


class LagMonitor:
    """Keeps the latest lag of the consumer groups ``groups()`` names and answers, without
    I/O, whether producers should hold back: :meth:`overloaded` returns a retry hint in
    milliseconds while any group is more than ``max_lag`` records behind.

    Fails open: while the lag cannot be read (the broker is down, the admin API refused)
    or the last reading is older than ``stale_after_s``, nothing is refused. A broker that
    is down is already met by the outbox backlog limit (QUORUM_MAX_OUTBOX_BACKLOG), which
    bounds what waits in the service's own database; refusing all new work because a
    metric is missing would turn a monitoring failure into an outage.
    """

    def __init__(
        self,
        read: Callable[[Mapping[str, Sequence[str]]], dict[str, int]],
        groups: Callable[[], Mapping[str, Sequence[str]]],
        max_lag: int,
        interval_s: float,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._groups = groups
        self.max_lag = max_lag
        self.interval_s = interval_s
        self._stale_after_s = stale_after_s if stale_after_s is not None else 3 * interval_s + 10.0
        self._clock = clock
        self._lock = threading.Lock()
        self._lag: dict[str, int] = {}
        self._read_at: float | None = None
        self._hint_ms: int | None = None
        self.failing = False

    @property
    def lag(self) -> dict[str, int]:
        """The last reading, ``{group: records behind}``; empty when unknown."""
        with self._lock:
            return dict(self._lag)

    def poll_once(self) -> bool:
        """Reads the lag once. Returns whether it could; a failure is logged (once until
        the next success) and clears the reading, so nothing is refused for want of it."""
        try:
            lag = self._read(self._groups())
        except Exception as exc:
            with self._lock:
                self._lag, self._read_at, self._hint_ms = {}, None, None
            if not self.failing:
                log.warning("consumer lag unknown, accepting work until it can be read again: %s", exc)
            self.failing = True
            return False
        now = self._clock()
        with self._lock:
            self._hint_ms = self._hint(lag, self._lag, now - self._read_at if self._read_at is not None else None)
            self._lag, self._read_at = lag, now
        if self.failing:
            log.info("consumer lag readable again: %s", lag)
        self.failing = False
        return True

    def _hint(self, lag: dict[str, int], before: dict[str, int], elapsed_s: float | None) -> int | None:
        behind = {group: n for group, n in lag.items() if n > self.max_lag}
        if not behind:
            return None
        # The slowest to get back under the limit decides.
        waits = []
        for group, n in behind.items():
            rate = None
            if elapsed_s and group in before:
                rate = (before[group] - n) / elapsed_s
            waits.append(retry_after_ms(n - self.max_lag, rate, self.interval_s))
        return max(waits)

    def overloaded(self) -> int | None:
        """Milliseconds a producer should wait before retrying while a watched group is too
        far behind; None to accept. No I/O."""
        with self._lock:
            if self._read_at is None or self._clock() - self._read_at > self._stale_after_s:
                return None
            return self._hint_ms

    def loop(self, stop: threading.Event) -> None:
        """Reads every ``interval_s`` until ``stop`` is set (a service's background loop)."""
        self.poll_once()
        while not stop.wait(self.interval_s):
            self.poll_once()
