"""``quorum aggregate`` end to end on small CSV files written by the test."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from aggregation_cases import simulated_crowd

from quorum.cli import main

METHODS = ("mv", "wmv", "wawa", "ds", "onecoin", "glad", "mace", "default")


def _write(path: Path, header: list[str], rows: Sequence[Sequence[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def crowd_files(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    answers, truth, _ = simulated_crowd(9, n_tasks=120, n_workers=15)
    answers_csv = _write(tmp_path / "answers.csv", ["task", "worker", "label"], answers)
    gold_csv = _write(tmp_path / "gold.csv", ["task", "label"], sorted(truth.items()))
    known_csv = _write(tmp_path / "known.csv", ["task", "label"], sorted(truth.items())[:12])
    return answers_csv, gold_csv, known_csv, truth


@pytest.mark.parametrize("method", METHODS)
def test_aggregate_writes_labels_and_prints_json_last(
    method: str,
    crowd_files: tuple[Path, Path, Path, dict[str, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answers_csv, gold_csv, _, truth = crowd_files
    out = tmp_path / "labels.csv"
    code = main(
        ["aggregate", str(answers_csv), "--method", method, "--out", str(out), "--gold", str(gold_csv), "--json"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["method"] == method
    assert summary["tasks"] == len(truth)
    assert summary["fit_seconds"] >= 0
    with out.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["task", "label", "confidence"]
    assert {row["task"] for row in rows} == set(truth)
    assert all(0.0 < float(row["confidence"]) <= 1.0 for row in rows)
    hits = sum(row["label"] == truth[row["task"]] for row in rows)
    assert summary["accuracy"] == pytest.approx(hits / len(truth))
    assert summary["accuracy"] > 0.7


def test_known_answers_reach_the_method_and_gold_does_not(
    crowd_files: tuple[Path, Path, Path, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers_csv, gold_csv, known_csv, _ = crowd_files
    out = tmp_path / "labels.csv"
    wrong_known = _write(tmp_path / "wrong.csv", ["task", "label"], [("t000", "c2"), ("t001", "c2")])
    main(["aggregate", str(answers_csv), "--out", str(out), "--known", str(wrong_known), "--json"])
    with out.open(newline="", encoding="utf-8") as handle:
        labels = {row["task"]: row for row in csv.DictReader(handle)}
    assert labels["t000"]["label"] == "c2" and float(labels["t000"]["confidence"]) == 1.0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["known_tasks"] == 2 and summary["accuracy"] is None
    # Gold only scores: the labels are the same with and without it.
    main(["aggregate", str(answers_csv), "--out", str(tmp_path / "a.csv"), "--method", "ds"])
    main(["aggregate", str(answers_csv), "--out", str(tmp_path / "b.csv"), "--method", "ds", "--gold", str(gold_csv)])
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    main(
        ["aggregate", str(answers_csv), "--out", str(out), "--known", str(known_csv), "--gold", str(gold_csv), "--json"]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["known_tasks"] == 12


def test_labels_are_kept_as_written(tmp_path: Path) -> None:
    answers_csv = _write(tmp_path / "a.csv", ["task", "worker", "label"], [("1", "w", "007"), ("2", "w", "7")])
    out = tmp_path / "labels.csv"
    assert main(["aggregate", str(answers_csv), "--method", "mv", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1:] == ["1,007,1.000000", "2,7,1.000000"]


def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = main(["aggregate", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.csv")])
    assert missing == 2 and "does not exist" in capsys.readouterr().err
    bad = _write(tmp_path / "bad.csv", ["task", "who", "label"], [("t", "w", "a")])
    assert main(["aggregate", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
    assert "missing worker" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["aggregate", str(bad), "--out", str(tmp_path / "o.csv"), "--method", "nope"])
