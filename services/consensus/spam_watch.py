"""Tells the other services when consensus's verdict on a worker changes.

Every refit round compares each worker's spam flag (see
:meth:`ConsensusQueries.list_workers`: a spam score above the threshold with enough answers
checked) with the last verdict published, and publishes a WorkerFlagged event for each
change through the outbox. Tasking stops handing tasks to a flagged spammer; the flag is
lifted by a later event if the evidence changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from quorum.db import enqueue, utcnow
from quorum.messaging import Topics, outgoing
from quorum.v1 import events_pb2
from services.consensus import tables as t
from services.consensus.aggregation.spam import SPAM_THRESHOLD
from services.consensus.handlers import ConsensusQueries

log = logging.getLogger(__name__)


class SpamWatch:
    """Publishes changes of the workers' spam flags. Cost: one ListWorkers over every job."""

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        outbox_written: Callable[[], None],
        queries: ConsensusQueries,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._topics = topics
        self._outbox_written = outbox_written
        self._queries = queries
        self._clock = clock

    def run_once(self) -> int:
        """Publishes a WorkerFlagged per worker whose verdict changed; returns how many."""
        workers = self._queries.list_workers(None)
        f = t.worker_flags
        now = self._clock()
        events = []
        with self._engine.begin() as conn:
            known = {row.worker_id: row.spammer for row in conn.execute(sa.select(f.c.worker_id, f.c.spammer))}
            for worker in workers:
                if known.get(worker.worker_id, False) == worker.spammer:
                    continue
                reason = (
                    f"answers at chance level: spam score {worker.spam_score:.2f} above {SPAM_THRESHOLD}"
                    if worker.spammer
                    else f"spam score {worker.spam_score:.2f} is back under {SPAM_THRESHOLD}"
                )
                values = {"spammer": worker.spammer, "spam_score": worker.spam_score, "changed_at": now}
                if worker.worker_id in known:
                    conn.execute(sa.update(f).where(f.c.worker_id == worker.worker_id).values(**values))
                else:
                    conn.execute(sa.insert(f).values(worker_id=worker.worker_id, **values))
                event = events_pb2.Event(
                    worker_flagged=events_pb2.WorkerFlagged(
                        worker_id=worker.worker_id,
                        spammer=worker.spammer,
                        spam_score=worker.spam_score,
                        reason=reason,
                    )
                )
                events.append(outgoing(self._topics.results, worker.worker_id, event))
            enqueue(conn, t.outbox, events)
        if events:
            self._outbox_written()
            log.info("published %d worker verdict changes", len(events))
        return len(events)
