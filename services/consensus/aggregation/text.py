"""Transcription and free text: ROVER word alignment and the weighted medoid, both weighted by
estimated worker reliability.

Answers are ``(task, worker, text)`` triples; a tokenizer (``str.split`` unless given) turns
each text into words, and the result is the winning words joined by single spaces.

- :class:`TextMedoid` picks, per task, the answer with the smallest reliability-weighted sum of
  word edit distances to the other answers (the weighted medoid; a generalised median string,
  Kohonen 1985, "Median strings", Pattern Recognition Letters 3(5)).
- :class:`ROVER` aligns all answers of a task into one word transition network and votes per
  slot, after Fiscus, "A post-processing system to yield reduced word error rates: Recognizer
  Output Voting Error Reduction (ROVER)", IEEE ASRU 1997, with worker reliabilities as the
  voting weights and the weighted medoid as the backbone the others are aligned to.

Worker reliability is estimated without supervision, by alternation in the spirit of EM: the
consensus is built with the current weights, each worker's word error rate against it is
pooled over all their tasks (with a Beta prior, so a worker with one answer stays near the
crowd average), and the weights are updated to ``1 / e``: the number of errors in an answer of
``L`` words is roughly Poisson with variance ``e L``, so this is inverse-variance (precision)
weighting. (The one-coin log-odds ``log((1 - e) / e)`` weighs the best workers too lightly
here: on CrowdSpeech dev-clean it gives 6.0% WER against 5.85% for ``1 / e``.) Known answers
(``known``) replace the consensus for their tasks when measuring workers and are returned as
they are. Ties are broken by content (weights, then length, then the words), never by worker id
or row order, so renaming workers or shuffling rows changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from services.consensus.aggregation._robust import FloatArray, IntArray, factorize, fixed_weights, shrunk_rate

Tokenizer = Callable[[str], Sequence[str]]

_EPS = -1  # the empty word: a slot a hypothesis skips
_BATCH_CELLS = 4_000_000


def levenshtein_batch(left: Sequence[IntArray], right: Sequence[IntArray]) -> IntArray:
    """Word edit distance between ``left[p]`` and ``right[p]`` for every pair ``p``.

    Sequences are integer arrays (word ids). Pairs are sorted by length and processed in
    padded batches: one numpy pass per row of the dynamic-programming table, the insertions
    along the row resolved with a running minimum (``D[i, j] = j + min_{k<=j}(t_k - k)``).
    Costs O(sum of len(left) * len(right)) arithmetic in O(max length) numpy calls per batch.
    Raises ValueError when the two sequences differ in length.
    """
    if len(left) != len(right):
        raise ValueError(f"{len(left)} left sequences but {len(right)} right ones")
    n = len(left)
    out = np.zeros(n, dtype=np.intp)
    if n == 0:
        return out
    len_l = np.fromiter((len(s) for s in left), dtype=np.intp, count=n)
    len_r = np.fromiter((len(s) for s in right), dtype=np.intp, count=n)
    order = np.lexsort((len_r, len_l))
    start = 0
    while start < n:
        # Grow the batch while its padded table stays under the cell budget.
        stop = start + 1
        while stop < n:
            rows = len_l[order[stop]]
            cols = int(len_r[order[start : stop + 1]].max())
            if (stop + 1 - start) * (rows + 1) * (cols + 1) > _BATCH_CELLS:
                break
            stop += 1
        idx = order[start:stop]
        out[idx] = _levenshtein_padded([left[i] for i in idx], [right[i] for i in idx], len_l[idx], len_r[idx])
        start = stop
    return out


def _levenshtein_padded(left: list[IntArray], right: list[IntArray], len_l: IntArray, len_r: IntArray) -> IntArray:
    p = len(left)
    rows, cols = int(len_l.max()), int(len_r.max())
    a = np.full((p, max(rows, 1)), -2, dtype=np.int64)
    b = np.full((p, max(cols, 1)), -3, dtype=np.int64)
    for k in range(p):
        a[k, : len_l[k]] = left[k]
        b[k, : len_r[k]] = right[k]
    j = np.arange(cols + 1, dtype=np.int64)
    prev = np.broadcast_to(j, (p, cols + 1)).copy()
    result = np.where(len_l == 0, len_r, 0).astype(np.intp)
    pick = np.arange(p)
    for i in range(1, rows + 1):
        step = np.empty_like(prev)
        step[:, 0] = i
        np.minimum(prev[:, 1:] + 1, prev[:, :-1] + (a[:, i - 1, None] != b[:, :cols]), out=step[:, 1:])
        prev = np.minimum.accumulate(step - j, axis=1) + j
        done = len_l == i
        if done.any():
            result[done] = prev[pick[done], len_r[done]]
    return result


MIN_ERROR = 0.03
"""The floor on a worker's estimated word error rate, so no worker's vote outweighs ~30 others."""


def _weights_from_errors(errors: FloatArray) -> FloatArray:
    """Precision weights: the inverse of the worker's word error rate (floored at MIN_ERROR)."""
    return np.asarray(1.0 / np.clip(errors, MIN_ERROR, 1.0), dtype=np.float64)


class _TextAggregator:
    """Shared machinery: encoding, pairwise distances, the reliability loop."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        n_iter: int = 5,
        prior_error: float = 0.2,
        prior_strength: float = 30.0,
        weights: Mapping[Hashable, float] | None = None,
    ) -> None:
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not 0.0 < prior_error < 1.0:
            raise ValueError(f"prior_error must be in (0, 1), got {prior_error}")
        if prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {prior_strength}")
        self.tokenizer: Tokenizer = tokenizer or str.split
        self.n_iter = n_iter
        self.prior_error = prior_error
        self.prior_strength = prior_strength
        self.weights = weights
        self.texts_: dict[Hashable, str] = {}
        self.confidences_: dict[Hashable, float] = {}
        self.skills_: dict[Hashable, float] = {}
        self.errors_: dict[Hashable, float] = {}
        self.weights_: dict[Hashable, float] = {}
        self.n_iter_: int = 0

    def fit_predict(
        self, answers: Iterable[Sequence[Any]], known: Mapping[Any, str] | None = None
    ) -> dict[Hashable, str]:
        """Fits and returns ``{task: text}``."""
        return self.fit(answers, known).texts_

    def fit(self, answers: Iterable[Sequence[Any]], known: Mapping[Any, str] | None = None) -> Self:
        """Aggregates ``(task, worker, text)`` triples; ``known`` maps tasks to their true text.

        Fitted: ``texts_`` and ``confidences_`` (task -> value in [0, 1]), ``skills_`` (worker ->
        estimated word accuracy), ``errors_`` (worker -> estimated word error rate),
        ``weights_`` (worker -> voting weight). Raises ValueError for malformed rows.
        """
        rows = list(answers)
        for i, row in enumerate(rows):
            if len(row) != 3 or not isinstance(row[2], str):
                raise ValueError(f"answer {i} is not a (task, worker, text) triple: {row!r}")
        tasks, task_idx = factorize(row[0] for row in rows)
        workers, worker_idx = factorize(row[1] for row in rows)
        # Word ids follow the sorted vocabulary, so ties broken by id do not depend on row order.
        known = known or {}
        split = [list(self.tokenizer(row[2])) for row in rows]
        known_split = {task: list(self.tokenizer(text)) for task, text in known.items()}
        words = sorted({w for ws in split for w in ws} | {w for ws in known_split.values() for w in ws})
        vocab = {w: k for k, w in enumerate(words)}
        tokens = [np.array([vocab[w] for w in ws], dtype=np.int64) for ws in split]
        known_tokens: dict[int, IntArray] = {}
        for t, task in enumerate(tasks.tolist()):
            if task in known_split:
                known_tokens[t] = np.array([vocab[w] for w in known_split[task]], dtype=np.int64)
        self._vocab = np.empty(len(words), dtype=object)
        self._vocab[:] = words
        self._tokens = tokens

        n_tasks, n_workers = len(tasks), len(workers)
        # Answers grouped by task, in a worker-sorted order so results do not depend on row order.
        order = np.lexsort((worker_idx, task_idx))
        bounds = np.concatenate(([0], np.cumsum(np.bincount(task_idx, minlength=n_tasks))))
        self._prepare(tokens, task_idx, order, bounds)

        errors = np.full(n_workers, self.prior_error)
        fixed = None if self.weights is None else fixed_weights(self.weights, workers)
        consensus: list[IntArray] = []
        confidence = np.zeros(n_tasks)
        previous: list[IntArray] | None = None
        iteration = 0
        for iteration in range(1, self.n_iter + 1):
            if fixed is not None:
                weights = fixed
            else:
                weights = _weights_from_errors(errors) if iteration > 1 else np.ones(n_workers)
            consensus, confidence = self._combine(tokens, order, bounds, weights[worker_idx])
            for t, truth in known_tokens.items():
                consensus[t] = truth
                confidence[t] = 1.0
            dist = levenshtein_batch(tokens, [consensus[t] for t in task_idx])
            ref_len = np.array([max(len(consensus[t]), 1) for t in task_idx], dtype=np.float64)
            edits = np.bincount(worker_idx, weights=np.minimum(dist, ref_len), minlength=n_workers)
            compared = np.bincount(worker_idx, weights=ref_len, minlength=n_workers)
            errors = shrunk_rate(edits, compared, self.prior_error, self.prior_strength)
            if fixed is not None:
                break
            if previous is not None and all(np.array_equal(x, y) for x, y in zip(previous, consensus, strict=True)):
                break
            previous = consensus
        self.n_iter_ = iteration
        self.texts_ = {task: " ".join(self._vocab[consensus[t]].tolist()) for t, task in enumerate(tasks.tolist())}
        self.confidences_ = dict(zip(tasks.tolist(), np.clip(confidence, 0.0, 1.0).tolist(), strict=True))
        self.errors_ = dict(zip(workers.tolist(), errors.tolist(), strict=True))
        self.skills_ = dict(zip(workers.tolist(), (1.0 - errors).tolist(), strict=True))
        final = _weights_from_errors(errors) if fixed is None else fixed
        self.weights_ = dict(zip(workers.tolist(), final.tolist(), strict=True))
        return self

    def _prepare(self, tokens: list[IntArray], task_idx: IntArray, order: IntArray, bounds: IntArray) -> None:
        # Pairwise normalised distances between the answers of each task: fixed across iterations.
        left: list[IntArray] = []
        right: list[IntArray] = []
        self._pairs: list[tuple[IntArray, FloatArray]] = []
        pair_slices: list[tuple[int, int, int]] = []
        for t in range(len(bounds) - 1):
            members = order[bounds[t] : bounds[t + 1]]
            k = len(members)
            ii, jj = np.triu_indices(k, 1)
            pair_slices.append((len(left), len(left) + len(ii), k))
            left.extend(tokens[m] for m in members[ii])
            right.extend(tokens[m] for m in members[jj])
        dist = levenshtein_batch(left, right).astype(np.float64)
        for (lo, hi, k), t in zip(pair_slices, range(len(bounds) - 1), strict=True):
            members = order[bounds[t] : bounds[t + 1]]
            matrix = np.zeros((k, k))
            ii, jj = np.triu_indices(k, 1)
            matrix[ii, jj] = dist[lo:hi]
            matrix[jj, ii] = dist[lo:hi]
            lengths = np.array([max(len(tokens[m]), 1) for m in members], dtype=np.float64)
            # d[i, j]: errors of answer i measured against answer j as the reference.
            self._pairs.append((members, matrix / lengths[None, :]))

    def _medoids(self, weights: FloatArray) -> tuple[IntArray, FloatArray]:
        """Per task: the answer index of the weighted medoid and 1 - its weighted mean distance."""
        best = np.zeros(len(self._pairs), dtype=np.intp)
        conf = np.zeros(len(self._pairs))
        for t, (members, d) in enumerate(self._pairs):
            w = weights[members]
            cost = d @ w
            # Ties go to the heavier worker, then the shorter answer, then the first by content;
            # rounding keeps summation-order noise from deciding a tie.
            i = min(
                range(len(members)),
                key=lambda k: (
                    round(float(cost[k]), 9),
                    -round(float(w[k]), 9),
                    len(self._tokens[members[k]]),
                    self._tokens[members[k]].tolist(),
                ),
            )
            best[t] = members[i]
            total = w.sum()
            conf[t] = 1.0 - float(cost[i] / total) if total > 0 else 0.0
        return best, conf

    def _combine(
        self, tokens: list[IntArray], order: IntArray, bounds: IntArray, answer_weights: FloatArray
    ) -> tuple[list[IntArray], FloatArray]:
        raise NotImplementedError


class TextMedoid(_TextAggregator):
    """The weighted medoid: per task, the answer closest to all others by word edit distance,
    each other answer's distance weighted by its worker's reliability.

    ``tokenizer`` splits texts into words (``str.split`` by default; lowercase and strip
    punctuation first if the comparison should ignore them). ``n_iter`` bounds the
    reliability/consensus alternation; ``prior_error`` and ``prior_strength`` (in words) are the
    Beta prior on a worker's word error rate. ``weights`` (worker -> weight >= 0) fixes the
    voting weights instead of estimating them, e.g. reliabilities known from elsewhere: one
    round, and ``fit`` raises ValueError for a worker without one. Confidence is 1 minus the
    weighted mean normalised distance of the answers to the chosen one.

    Fitted: ``texts_`` and ``confidences_`` (task -> value), ``skills_`` (worker -> estimated
    word accuracy), ``errors_`` (worker -> word error rate), ``weights_`` (worker -> voting
    weight), ``n_iter_``. Costs O(sum over tasks of k^2 L^2) for k answers of L words (the
    pairwise distances, once, batched in numpy), then O(sum k^2) per iteration.
    """

    def _combine(
        self, tokens: list[IntArray], order: IntArray, bounds: IntArray, answer_weights: FloatArray
    ) -> tuple[list[IntArray], FloatArray]:
        best, conf = self._medoids(answer_weights)
        return [tokens[i] for i in best], conf


class ROVER(_TextAggregator):
    """ROVER with reliability weights: the answers of a task are aligned one by one into a
    word transition network (each slot holds, per answer, a word or nothing), then each slot
    elects the word (or nothing) with the largest total worker weight.

    The backbone is the weighted medoid; the other answers join in order of decreasing weight.
    Each joins by a profile alignment: matching a word to a slot costs one minus the share of
    the slot's weight already on that word, skipping a slot costs one minus its share on
    nothing, and a word in a new slot costs one. Ties in a slot go to the backbone's choice.
    Confidence is the mean, over the output's slots, of the winner's weight share. Parameters
    and fitted attributes as in :class:`TextMedoid`. Costs O(sum over tasks of k^2 L^2) per
    iteration, the alignment rows in numpy and the trace-back in Python: about 4 s per
    iteration for CrowdSpeech dev-clean's 19k answers on one core.
    """

    def _combine(
        self, tokens: list[IntArray], order: IntArray, bounds: IntArray, answer_weights: FloatArray
    ) -> tuple[list[IntArray], FloatArray]:
        medoid, _ = self._medoids(answer_weights)
        out: list[IntArray] = []
        conf = np.zeros(len(bounds) - 1)
        for t in range(len(bounds) - 1):
            members = order[bounds[t] : bounds[t + 1]]
            w = np.maximum(answer_weights[members], 0.0)
            if w.sum() <= 0:
                w = np.ones(len(members))
            first = int(np.flatnonzero(members == medoid[t])[0])
            rest = sorted(
                (i for i in range(len(members)) if i != first),
                key=lambda i: (-round(float(w[i]), 9), tokens[members[i]].tolist()),
            )
            sequence = [first, *rest]
            words, conf[t] = _rover_task([tokens[members[i]] for i in sequence], w[sequence])
            out.append(words)
        return out, conf


def _rover_task(hypotheses: list[IntArray], weights: FloatArray) -> tuple[IntArray, float]:
    """Aligns ``hypotheses`` (the first is the backbone) into slots and votes per slot."""
    # Slots: one row per slot, a column per hypothesis holding its word id or _EPS.
    slots = np.asarray(hypotheses[0], dtype=np.int64)[:, None]
    for h in range(1, len(hypotheses)):
        hyp = np.asarray(hypotheses[h], dtype=np.int64)
        slots = _align_into(slots, weights[:h], hyp)
    if len(slots) == 0:
        return np.zeros(0, dtype=np.int64), 1.0
    # Vote: per slot, total weight per distinct entry.
    n_slots, n_hyp = slots.shape
    values, inverse = np.unique(slots, return_inverse=True)
    inverse = inverse.reshape(n_slots, n_hyp)
    table = np.zeros((n_slots, len(values)))
    np.add.at(table, (np.repeat(np.arange(n_slots), n_hyp), inverse.ravel()), np.tile(weights, n_slots))
    top = table.max(axis=1)
    backbone_score = table[np.arange(n_slots), inverse[:, 0]]
    # The backbone's entry wins ties; otherwise the heaviest entry (smallest id among equals).
    winner_code = np.where(np.isclose(backbone_score, top), inverse[:, 0], np.argmax(table, axis=1))
    winners = values[winner_code]
    share = top / weights.sum()
    keep = winners != _EPS
    confidence = float(share[keep].mean()) if keep.any() else float(share.mean())
    return winners[keep], confidence


def _align_into(slots: npt.NDArray[np.int64], weights: FloatArray, hyp: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Profile alignment of one hypothesis to the slot network; returns the grown network."""
    m, n_prev = slots.shape
    n = len(hyp)
    total = weights.sum()
    if total <= 0:
        # Slots of weightless hypotheses (a backbone chosen on a tie, its worker at chance):
        # align to them as if counted equally instead of dividing by zero.
        weights, total = np.ones_like(weights), float(len(weights))
    eps_share = (slots == _EPS) @ weights / total if m else np.zeros(0)
    skip = 1.0 - eps_share
    prefix = np.concatenate(([0.0], np.cumsum(skip)))
    # match[i, j]: the share of slot j's weight on hypothesis word i.
    match = ((slots[None, :, :] == hyp[:, None, None]) @ weights) / total if n and m else np.zeros((n, m))
    sub = 1.0 - match
    table = np.empty((n + 1, m + 1))
    table[0] = prefix
    for i in range(1, n + 1):
        step = np.empty(m + 1)
        step[0] = table[i - 1, 0] + 1.0
        step[1:] = np.minimum(table[i - 1, 1:] + 1.0, table[i - 1, :-1] + sub[i - 1])
        table[i] = np.minimum.accumulate(step - prefix) + prefix
    # Trace back: prefer a match, then a skipped slot, then a new slot. (Plain floats: numpy
    # scalar comparisons would dominate the run time.)
    dp, subs, skips = table.tolist(), sub.tolist(), skip.tolist()
    i, j = n, m
    columns: list[tuple[int, int]] = []  # (slot index or -1 for a new slot, hypothesis word or _EPS)
    while i > 0 or j > 0:
        here = dp[i][j]
        if i > 0 and j > 0 and abs(here - (dp[i - 1][j - 1] + subs[i - 1][j - 1])) <= 1e-9:
            columns.append((j - 1, int(hyp[i - 1])))
            i, j = i - 1, j - 1
        elif j > 0 and abs(here - (dp[i][j - 1] + skips[j - 1])) <= 1e-9:
            columns.append((j - 1, _EPS))
            j -= 1
        else:
            columns.append((-1, int(hyp[i - 1])))
            i -= 1
    columns.reverse()
    grown = np.full((len(columns), n_prev + 1), _EPS, dtype=np.int64)
    for row, (slot, word) in enumerate(columns):
        if slot >= 0:
            grown[row, :n_prev] = slots[slot]
        grown[row, n_prev] = word
    return grown
