"""The periodic refit through the real handler, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from consensus_helpers import NOW, TOPICS, answer_accepted, job_created, outbox_events, task_created

from services.consensus import tables as t
from services.consensus.handlers import ConsensusEvents
from services.consensus.refit import Refit
from services.consensus.review import ExpertReview


@pytest.fixture
def refit(engine: sa.Engine) -> Refit:
    return Refit(engine, TOPICS, lambda: None, clock=lambda: NOW)


def results(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.task_id: row for row in conn.execute(sa.select(t.results))}


def test_a_reviewed_classification_task_keeps_the_reviewers_label(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([job_created("j", overlap=(3, 3), target=0.95, expert_review=True), task_created("r", "j")])
    handler.handle([answer_accepted("r", "j", w, label) for w, label in (("w1", "cat"), ("w2", "dog"), ("w3", "dog"))])
    for k in range(5):
        handler.handle(
            [task_created(f"c{k}", "j"), *(answer_accepted(f"c{k}", "j", w, "cat") for w in ("w1", "w2", "w3"))]
        )
    # Nobody answered "bird": every fit of the answers prefers another label.
    ExpertReview(engine, TOPICS, lambda: None, clock=lambda: NOW).submit("r", "expert", "bird")
    published = len(outbox_events(engine))

    refit.run_once()
    row = results(engine)["r"]
    assert (row.label, row.version) == ("bird", 1)
    assert not [e for _, _, e in outbox_events(engine)[published:] if e.task_resolved.task_id == "r"]
