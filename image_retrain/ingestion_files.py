"""Readers of the files ImageExampleGen writes beside its splits (names and meaning: image_retrain/contract.py).

Layout of an ImageExampleGen `Examples` artifact (`<uri>`):

    <uri>/Split-train/data_tfrecord-*.gz    standard ExampleGen splits (gzipped TFRecords of tf.Example)
    <uri>/Split-eval/...
    <uri>/Split-test/...
    <uri>/<contract.INGESTION_FILES>        vocabulary, rejects and summary

This module imports nothing heavy (no TensorFlow) so the CLI and reports can use it cheaply; it reads through
`tfx.dsl.io.fileio` only when the artifact is not on the local file system.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import NamedTuple

from image_retrain.contract import INGESTION_SUMMARY_FILE, LABELS_FILE
from image_retrain.paths import is_uri, join

REJECTS_COLUMNS = ("path", "label", "reason")


class Reject(NamedTuple):
    """One input that was not turned into an example. `reason` is '<code>: <detail>'."""

    path: str
    label: str
    reason: str

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


def _read_text(path: str) -> str:
    if is_uri(path):
        from tfx.dsl.io import fileio  # noqa: PLC0415 - object-store artifacts only: local reads stay light

        with fileio.open(path, "rb") as f:
            return f.read().decode("utf-8")
    with open(path, "rb") as f:
        return f.read().decode("utf-8")


def read_labels_file(path: str | os.PathLike) -> list[str]:
    """A label vocabulary file (an artifact's LABELS_FILE or a model's LABELS_ASSET): one name per line."""
    return [line for line in _read_text(os.fspath(path)).split("\n") if line]  # the writers' inverse: '\n' only


def read_label_vocabulary(examples_uri: str | os.PathLike) -> list[str]:
    """The sorted label names of an ImageExampleGen artifact; `vocabulary[label_int]` is the class name."""
    return read_labels_file(join(examples_uri, LABELS_FILE))


def read_ingestion_summary(examples_uri: str | os.PathLike) -> dict:
    """The JSON summary: {'label_vocabulary', 'split_counts', 'num_rejects', 'rejects_by_code', ...}."""
    return json.loads(_read_text(join(examples_uri, INGESTION_SUMMARY_FILE)))


def format_rejects_csv(rejects: list[Reject]) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REJECTS_COLUMNS)
    for reject in sorted(rejects):
        writer.writerow(reject)
    return out.getvalue()
