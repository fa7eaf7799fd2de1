"""The rows a batch prediction writes, one per image: their columns, declared once for the DoFn and the writer.

A prediction: `path` (as listed: relative to --data-dir, or as the manifest wrote it), `given_label` (only when the
input gives labels: the class folder, or the manifest's `label` column; '' for a row without one), the top-k labels
and scores as `label_1, score_1, ..., label_k, score_k` (k = --top-k, or the model's class count if smaller; highest
score first), and `model`, `version`: which model answered. A reject: `path`, `given_label` (likewise) and `reason`,
ingestion's '<code>: <detail>'.
"""
from __future__ import annotations

PATH, GIVEN_LABEL, MODEL, VERSION, REASON = "path", "given_label", "model", "version", "reason"


def label_column(rank: int) -> str:
    return f"label_{rank}"


def score_column(rank: int) -> str:
    return f"score_{rank}"


def prediction_columns(top_k: int, labelled: bool) -> list[str]:
    ranked = [column for rank in range(1, top_k + 1) for column in (label_column(rank), score_column(rank))]
    return [PATH, *([GIVEN_LABEL] if labelled else []), *ranked, MODEL, VERSION]


def reject_columns(labelled: bool) -> list[str]:
    return [PATH, *([GIVEN_LABEL] if labelled else []), REASON]


def prediction_row(path: str, given_label: str, labelled: bool, ranked: list[tuple[str, float]], model: str,
                   version: int) -> dict:
    """`ranked`: (label, score) pairs, highest score first."""
    row = {PATH: path, **({GIVEN_LABEL: given_label} if labelled else {})}
    for rank, (label, score) in enumerate(ranked, start=1):
        row[label_column(rank)], row[score_column(rank)] = label, score
    return {**row, MODEL: model, VERSION: version}


def reject_row(path: str, given_label: str, labelled: bool, reason: str) -> dict:
    return {PATH: path, **({GIVEN_LABEL: given_label} if labelled else {}), REASON: reason}
