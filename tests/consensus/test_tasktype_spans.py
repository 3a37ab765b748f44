"""Named-entity span aggregation: IOB2 conversion, clustering, boundaries by weighted mode or
median, types by weighted vote, existence, known spans, invariance, and a slice of the CoNLL-2003
MTurk annotations (tests/consensus/data, see ATTRIBUTION.md)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation._robust import group_weighted_median
from services.consensus.aggregation.spans import SpanVote, iob2_to_spans, spans_to_iob2

DATA = Path(__file__).parent / "data"


def test_iob2_decoding_is_lenient_like_conlleval() -> None:
    assert iob2_to_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == [
        (0, 2, "PER"),
        (3, 4, "LOC"),
        (4, 5, "LOC"),
        (5, 6, "ORG"),
    ]
    assert spans_to_iob2([(0, 2, "PER"), (3, 4, "LOC")], 5) == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    with pytest.raises(ValueError):
        iob2_to_spans(["X-PER"])
    with pytest.raises(ValueError):
        spans_to_iob2([(0, 2, "A"), (1, 3, "B")], 4)


@given(st.lists(st.sampled_from(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]), max_size=20))
def test_iob2_round_trip(tags: list[str]) -> None:
    spans = iob2_to_spans(tags)
    assert iob2_to_spans(spans_to_iob2(spans, len(tags))) == spans


def test_overlapping_spans_cluster_and_take_the_modal_boundaries_and_type() -> None:
    rows = [
        ("s", "a", [(0, 2, "ORG")]),
        ("s", "b", [(0, 2, "ORG")]),
        ("s", "c", [(0, 3, "LOC")]),
        ("s", "d", [(1, 2, "ORG")]),
    ]
    model = SpanVote().fit(rows)
    assert model.spans_["s"] == [(0, 2, "ORG")]
    [cluster] = model.clusters_
    assert cluster["workers"] == ["a", "b", "c", "d"]
    assert 0.5 < model.confidences_["s"][0] <= 1.0


def test_boundaries_fall_back_to_the_median_when_there_is_no_mode() -> None:
    rows = [("s", "a", [(0, 3, "PER")]), ("s", "b", [(1, 4, "PER")]), ("s", "c", [(2, 5, "PER")])]
    model = SpanVote(n_iter=1).fit(rows)
    assert model.spans_["s"] == [(1, 4, "PER")]


def test_an_entity_one_of_five_marks_is_dropped_but_a_precise_markers_is_kept() -> None:
    # Workers a-c mark both entities everywhere; d and e miss the second one. A lone mark by a
    # worker who never marks anything false survives; a lone mark by a noisy worker does not.
    rows = []
    for t in range(20):
        rows += [(t, w, [(0, 1, "PER"), (5, 7, "LOC")]) for w in "abc"]
        rows += [(t, w, [(0, 1, "PER")]) for w in "de"]
        rows.append((t, "noisy", [(0, 1, "PER"), (9, 10, "ORG")]))  # a false mark everywhere
    model = SpanVote().fit(rows)
    for t in range(20):
        assert model.spans_[t] == [(0, 1, "PER"), (5, 7, "LOC")]
    assert model.false_mark_["noisy"] > model.false_mark_["a"]
    assert model.sensitivity_["d"] < model.sensitivity_["a"]


def test_a_worker_with_nothing_marked_still_votes_against() -> None:
    rows = [("s", "a", [(0, 1, "PER")]), ("s", "b", []), ("s", "c", []), ("s", "d", []), ("s", "e", [])]
    assert SpanVote().fit_predict(rows) == {"s": []}


def test_types_follow_the_confusion_weighted_vote() -> None:
    # Worker x calls every ORG a LOC; with enough evidence its LOC votes count for ORG.
    rows: list[tuple[str, str, list[tuple[int, int, str]]]] = []
    for t in range(30):
        rows += [(str(t), "a", [(0, 1, "ORG")]), (str(t), "b", [(0, 1, "ORG")]), (str(t), "x", [(0, 1, "LOC")])]
    rows += [("q", "a", [(0, 1, "ORG")]), ("q", "x", [(0, 1, "LOC")]), ("q", "y", [(0, 1, "LOC")])]
    model = SpanVote().fit(rows)
    assert model.spans_["q"] == [(0, 1, "ORG")]


def test_known_spans_are_returned() -> None:
    rows = [("s", "a", [(0, 1, "PER")]), ("s", "b", [(0, 2, "PER")]), ("u", "a", [(3, 4, "LOC")])]
    model = SpanVote().fit(rows, known={"s": [(0, 2, "PER")]})
    assert model.spans_["s"] == [(0, 2, "PER")]
    assert model.confidences_["s"] == [1.0]


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        SpanVote().fit([("s", "a")])
    with pytest.raises(ValueError):
        SpanVote().fit([("s", "a", [(2, 2, "PER")])])
    assert SpanVote().fit([]).spans_ == {}
    assert SpanVote().fit([("s", "a", [])]).spans_ == {"s": []}


span_rows = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 4),
        st.lists(st.tuples(st.integers(0, 8), st.integers(1, 3), st.sampled_from(["PER", "LOC"])), max_size=3),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(span_rows)
def test_worker_names_and_row_order_do_not_change_the_spans(
    spec: list[tuple[int, int, list[tuple[int, int, str]]]],
) -> None:
    rows = [
        (t, f"w{w}", [(s, s + n, k) for s, n, k in spans])
        for t, w, spans in {(t, w): (t, w, sp) for t, w, sp in spec}.values()
    ]
    renamed = [(t, f"x{9 - int(w[1:])}", spans) for t, w, spans in reversed(rows)]
    a, b = SpanVote().fit(rows), SpanVote().fit(renamed)
    assert a.spans_ == b.spans_
    for task, confs in a.confidences_.items():
        assert confs == pytest.approx(b.confidences_[task])
        assert all(0.0 <= c <= 1.0 for c in confs)
        spans = a.spans_[task]
        assert all(x[1] <= y[0] for x, y in itertools.pairwise(spans))  # sorted, no overlap


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-20, 20), st.integers(1, 5)), min_size=1, max_size=15))
def test_weighted_median_matches_brute_force(values: list[tuple[int, int]]) -> None:
    import numpy as np

    v = np.array([x for x, _ in values], dtype=float)
    w = np.array([c for _, c in values], dtype=float)
    got = group_weighted_median(v, w, np.zeros(len(v), dtype=np.intp), 1)[0]
    expanded = np.repeat(v, w.astype(int))
    assert got == pytest.approx(float(np.median(expanded)))


Spans = dict[Any, list[tuple[int, int, Any]]]


def load_slice() -> tuple[list[tuple[str, str, list[tuple[int, int, Any]]]], Spans]:
    answers = [json.loads(line) for line in (DATA / "ner_conll2003_mturk_slice.jsonl").open()]
    gold = {
        g["task"]: iob2_to_spans(g["tags"])
        for g in (json.loads(line) for line in (DATA / "ner_conll2003_gold_slice.jsonl").open())
    }
    return [(a["task"], a["worker"], iob2_to_spans(a["tags"])) for a in answers], gold


def f1(pred: Spans, gold: Spans) -> float:
    tp = sum(len(set(pred.get(t, [])) & set(g)) for t, g in gold.items())
    n_pred = sum(len(p) for p in pred.values())
    n_gold = sum(len(g) for g in gold.values())
    return 2 * tp / (n_pred + n_gold)


def test_on_a_slice_of_real_annotations_it_beats_token_majority_vote() -> None:
    rows, gold = load_slice()
    by_task: dict[str, list[list[str]]] = {}
    for a in (json.loads(line) for line in (DATA / "ner_conll2003_mturk_slice.jsonl").open()):
        by_task.setdefault(a["task"], []).append(a["tags"])
    majority = {}
    for task, tag_lists in by_task.items():
        tags = []
        for column in zip(*tag_lists, strict=True):
            counts = Counter(column)
            top = max(counts.values())
            tied = sorted(k for k, c in counts.items() if c == top)
            tags.append("O" if "O" in tied else tied[0])
        majority[task] = iob2_to_spans(tags)
    ours = SpanVote().fit_predict(rows)
    assert f1(ours, gold) > f1(majority, gold)
