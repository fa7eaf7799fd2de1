"""The files ImageExampleGen writes beside its splits, and how downstream components read them.

Layout of an ImageExampleGen `Examples` artifact (`<uri>`):

    <uri>/Split-train/data_tfrecord-*.gz    standard ExampleGen splits (gzipped TFRecords of tf.Example)
    <uri>/Split-eval/...
    <uri>/Split-test/...
    <uri>/labels.txt                          label vocabulary, one per line, sorted; line index == `label` int
    <uri>/rejects.csv                         path,label,reason of every input that was skipped
    <uri>/ingestion_summary.json              counts per split, vocabulary, rejects by reason code

This module imports nothing heavy (no TensorFlow) so the CLI and reports can use it cheaply; it reads through
`tfx.dsl.io.fileio` only when the artifact is not on the local file system.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import NamedTuple

LABELS_FILE = "labels.txt"
REJECTS_FILE = "rejects.csv"
SUMMARY_FILE = "ingestion_summary.json"
REJECTS_COLUMNS = ("path", "label", "reason")

# Custom properties set on the Examples artifact (also readable from MLMD / KFP UI).
LABEL_VOCABULARY_PROPERTY = "label_vocabulary"  # JSON list of label names, index == label int
NUM_CLASSES_PROPERTY = "num_classes"
NUM_REJECTS_PROPERTY = "num_rejects"
NUM_EXAMPLES_PROPERTY_PREFIX = "num_examples_"  # + split name, e.g. num_examples_train


class Reject(NamedTuple):
    """One input that was not turned into an example. `reason` is '<code>: <detail>'."""

    path: str
    label: str
    reason: str

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def _join(base: str | os.PathLike, name: str) -> str:
    return os.fspath(base).rstrip("/") + "/" + name


def _read_text(path: str) -> str:
    if "://" in path:
        from tfx.dsl.io import fileio

        with fileio.open(path, "rb") as f:
            return f.read().decode("utf-8")
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def read_label_vocabulary(examples_uri: str | os.PathLike) -> list[str]:
    """The sorted label names of an ImageExampleGen artifact; `vocabulary[label_int]` is the class name."""
    text = _read_text(_join(examples_uri, LABELS_FILE))
    return [line for line in text.split("\n") if line]


def read_rejects(examples_uri: str | os.PathLike) -> list[Reject]:
    """Every skipped input of an ImageExampleGen artifact, sorted by path."""
    text = _read_text(_join(examples_uri, REJECTS_FILE))
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if tuple(reader.fieldnames or ()) != REJECTS_COLUMNS:
        raise ValueError(f"{_join(examples_uri, REJECTS_FILE)}: expected columns {REJECTS_COLUMNS}, "
                         f"found {reader.fieldnames}")
    return [Reject(row["path"], row["label"], row["reason"]) for row in reader]


def read_ingestion_summary(examples_uri: str | os.PathLike) -> dict:
    """The JSON summary: {'label_vocabulary', 'split_counts', 'num_rejects', 'rejects_by_code', ...}."""
    return json.loads(_read_text(_join(examples_uri, SUMMARY_FILE)))


def format_rejects_csv(rejects: list[Reject]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REJECTS_COLUMNS)
    for reject in sorted(rejects):
        writer.writerow(reject)
    return out.getvalue()
