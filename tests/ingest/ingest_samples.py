"""Sample objects and specs for the ingest tests: small real images, broken ones, and
a Kafka reader."""

from __future__ import annotations

import io
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer
from PIL import Image

from quorum.v1 import common_pb2, events_pb2

LABELS = ("cat", "dog", "bird")


def image(seed: int = 0, size: tuple[int, int] = (24, 24), fmt: str = "PNG") -> bytes:
    """A small noisy image; different seeds give different bytes (and sha256)."""
    rng = random.Random(seed)
    pixels = bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, fmt)
    return out.getvalue()


def truncated(data: bytes) -> bytes:
    """The image with its second half cut off: the header still parses."""
    return data[: len(data) // 2]


def corrupt() -> bytes:
    """Bytes that are no image format at all."""
    return bytes(range(256)) * 4


def bomb(width: int = 9_000, height: int = 9_000) -> bytes:
    """A tiny PNG that claims width x height pixels (one palette colour compresses to nothing)."""
    out = io.BytesIO()
    Image.new("1", (width, height)).save(out, "PNG")
    return out.getvalue()


def spec_proto(task: str = "image_classification", **fields: Any) -> common_pb2.JobSpec:
    """A valid JobSpec; keyword arguments override fields."""
    values: dict[str, Any] = {"name": "pets", "client_id": "acme"}
    values.update(fields)
    labels = values.pop("labels", LABELS)
    spec = common_pb2.JobSpec(**values)
    if task:
        getattr(spec, task).labels.extend(labels)
    return spec


def read_events(
    bootstrap: str,
    topics: list[str],
    until: Callable[[list[events_pb2.Event]], bool],
    timeout_s: float = 30.0,
) -> list[tuple[str, bytes, events_pb2.Event]]:
    """Reads ``topics`` from the start in a group of its own until ``until(events)``
    holds; returns (topic, key, event) triples, in order within each partition.
    Raises AssertionError on timeout."""
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex[:10]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        fetch_max_wait_ms=100,
    )
    records: list[tuple[str, bytes, events_pb2.Event]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                for record in batch:
                    records.append((record.topic, record.key, events_pb2.Event.FromString(record.value)))
            if until([event for _, _, event in records]):
                return records
    finally:
        consumer.close(autocommit=False)
    raise AssertionError(f"{topics}: condition not met after {timeout_s} s; got {len(records)} events")
