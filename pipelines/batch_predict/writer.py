"""The output files of a batch prediction: the format the output's extension names, written whole or not at all.

The Beam job writes its rows as JSON-lines shards into a hidden parts folder beside the output (any number of
workers may write them); `publish` then streams them into the output, `.jsonl` (one JSON object per line) or `.csv`
(a header, then one row per image; pandas.read_csv reads it), under a hidden temporary name renamed onto the output
once complete. The rejects go first, to `<output stem>.rejects.<ext>`, so a predictions file that exists has its
rejects beside it; a job that fails leaves neither half-written (the parts folder goes too). Paths go through Beam's
FileSystems, so a bucket (gs://) works as a local folder does; object stores write an object whole anyway.
"""
from __future__ import annotations

import csv
import io
import json
import posixpath
import uuid
from collections.abc import Iterator

from apache_beam.io.filesystems import FileSystems

JSONL, CSV = ".jsonl", ".csv"
FORMATS = (JSONL, CSV)
PREDICTIONS_PART, REJECTS_PART = "predictions", "rejects"


def output_format(output: str) -> str:
    """The output's extension, when it names a format; a ValueError otherwise."""
    extension = posixpath.splitext(FileSystems.split(output)[1])[1].lower()
    if extension not in FORMATS:
        raise ValueError(f"unsupported output extension {extension or '(none)'!r} of {output}: use .jsonl (one JSON "
                         "object per line) or .csv")
    return extension


def rejects_path(output: str) -> str:
    """preds.jsonl -> preds.rejects.jsonl"""
    stem, extension = posixpath.splitext(output)
    return f"{stem}.rejects{extension}"


def _hidden_beside(output: str, kind: str) -> str:
    folder, name = FileSystems.split(output)
    return FileSystems.join(folder, f".{name}.{kind}-{uuid.uuid4().hex[:8]}")


def parts_folder(output: str) -> str:
    """A new hidden folder beside `output` for the job's shards."""
    return _hidden_beside(output, "parts")


def part_prefix(parts: str, part: str) -> str:
    """The shard prefix of `part` (PREDICTIONS_PART or REJECTS_PART) under the parts folder, for WriteToText."""
    return FileSystems.join(parts, part)


def remove(path: str) -> None:
    if FileSystems.exists(path):
        FileSystems.delete([path])


def publish(parts: str, output: str, prediction_columns: list[str], reject_columns: list[str]) -> tuple[int, int]:
    """Writes the rejects file, then the output, from the shards under `parts`; returns (predictions, rejects). A file
    with no rows is still written (a CSV with its header: `*_columns`; with rows, the rows' own keys)."""
    extension = output_format(output)
    rejected = _publish(_lines(parts, REJECTS_PART), rejects_path(output), extension, reject_columns)
    predicted = _publish(_lines(parts, PREDICTIONS_PART), output, extension, prediction_columns)
    return predicted, rejected


def _lines(parts: str, part: str) -> Iterator[bytes]:
    (match,) = FileSystems.match([f"{part_prefix(parts, part)}-*"])
    for shard in sorted(metadata.path for metadata in match.metadata_list):
        with FileSystems.open(shard) as stream:
            yield from (line for line in stream if line.strip())


def _publish(lines: Iterator[bytes], path: str, extension: str, empty_columns: list[str]) -> int:
    temporary = _hidden_beside(path, "tmp")
    try:
        with FileSystems.create(temporary) as stream:
            count = _write_jsonl(lines, stream) if extension == JSONL else _write_csv(lines, stream, empty_columns)
        FileSystems.rename([temporary], [path])
    finally:
        remove(temporary)
    return count


def _write_jsonl(lines: Iterator[bytes], stream) -> int:
    count = 0
    for line in lines:
        stream.write(line.rstrip(b"\r\n") + b"\n")
        count += 1
    return count


def _write_csv(lines: Iterator[bytes], stream, empty_columns: list[str]) -> int:
    buffer = io.StringIO(newline="")
    writer, count = None, 0
    for line in lines:
        row = json.loads(line)
        if writer is None:  # every row of a job has the same keys (rows.py)
            writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
            writer.writeheader()
        writer.writerow(row)
        count += 1
        stream.write(buffer.getvalue().encode("utf-8"))
        buffer.seek(0)
        buffer.truncate()
    if writer is None:
        csv.writer(buffer, lineterminator="\n").writerow(empty_columns)
        stream.write(buffer.getvalue().encode("utf-8"))
    return count
