"""Reliability-weighted labels against plain majority vote on a seeded simulated crowd:
300 tasks, 3 labels, 30 workers of accuracy 0.5-0.95 of whom 15% are spammers, 5 answers per
task, 5% gold tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from consensus_helpers import Crowd, answer_accepted, job_created, simulate_crowd, task_created

from quorum.db import make_engine
from quorum.messaging import Topics
from services.consensus import tables
from services.consensus.aggregation import GoldReliability, MajorityVote, OneCoinVote
from services.consensus.handlers import ConsensusEvents


def accuracy(crowd: Crowd, labels: Mapping[Any, Any]) -> float:
    plain = [task for task in crowd.truth if task not in crowd.gold]
    return sum(labels[task] == crowd.truth[task] for task in plain) / len(plain)


def test_reliability_weighted_vote_is_at_least_as_accurate_as_majority_vote() -> None:
    for seed in (7, 11, 13):
        crowd = simulate_crowd(seed=seed)
        majority = MajorityVote(labels=crowd.labels).fit(crowd.answers)
        skills = GoldReliability().fit(crowd.answers, crowd.gold, consensus=majority.labels_).skills_
        weighted = OneCoinVote(skills, labels=crowd.labels).fit_predict(crowd.answers)
        assert accuracy(crowd, weighted) >= accuracy(crowd, majority.labels_), seed

        spam = [skills[w] for w in crowd.spammers]
        honest = [skills[w] for w in crowd.accuracy if w not in crowd.spammers and crowd.accuracy[w] > 0.8]
        assert max(spam) < min(honest), seed


def test_the_streaming_service_beats_its_own_majority_label(tmp_path: object) -> None:
    crowd = simulate_crowd(seed=7)
    engine = make_engine(f"sqlite:///{tmp_path}/consensus.db")
    tables.metadata.create_all(engine)
    handler = ConsensusEvents(engine, Topics("accuracy"))
    handler.load()
    # Exactly 5 answers per task, so the label and the majority label see the same answers.
    events = [job_created("job", crowd.labels, overlap=(5, 5), target=0.9)]
    events += [task_created(task, "job", gold_label=crowd.gold.get(task)) for task in crowd.truth]
    # A crowd works through a queue: each task's answers come close together.
    events += [answer_accepted(t, "job", w, label) for t, w, label in sorted(crowd.answers, key=lambda a: a[0])]
    for start in range(0, len(events), 100):
        handler.handle(events[start : start + 100])

    r = tables.results
    with engine.connect() as conn:
        rows = conn.execute(sa.select(r.c.task_id, r.c.label, r.c.majority_label)).all()
    engine.dispose()
    assert len(rows) == len(crowd.truth) - len(crowd.gold)
    weighted = {row.task_id: row.label for row in rows}
    majority = {row.task_id: row.majority_label for row in rows}
    assert accuracy(crowd, weighted) >= accuracy(crowd, majority)
    assert accuracy(crowd, weighted) > 0.8
