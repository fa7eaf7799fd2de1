"""Turns an input (folder-per-class tree or CSV manifest) into the list of candidate files to validate.

Listing runs once in the executor process; reading and decoding the files is left to the Beam pipeline.
Problems visible at listing time (a file outside any class folder, an empty class folder, a directory symlink
that loops back, a symbolic link leading out of the data root, a folder named like an image file, a malformed manifest
row) become rejects here, with the same '<code>: <detail>' reasons. A manifest's header is checked before its rows are
read (and by `check_manifest_header` before a pipeline starts at all).
"""
from __future__ import annotations

import csv
import os
import posixpath
from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

from components.image_example_gen import validation as v
from image_retrain.ingestion_files import Reject
from image_retrain.paths import is_uri
from serving.path_confinement import is_within

MANIFEST_PATH_COLUMN = "path"
MANIFEST_LABEL_COLUMN = "label"
MANIFEST_SPLIT_COLUMN = "split"
# A folder with one of these suffixes is most likely a mistake (an archive unpacked into a folder named like the
# image): it is reported and not searched.
IMAGE_FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".heic", ".avif")


class ImageCandidate(NamedTuple):
    path: str  # reported path: relative to input_base (folder layout) or exactly as written in the manifest
    label: str
    location: str  # where to read the bytes
    split: str  # split named by the manifest's `split` column; '' = assign by the stable hash of `path`


@dataclass
class Listing:
    candidates: list[ImageCandidate] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    # Every label seen (class folder or manifest label) -> number of candidate files listed under it.
    files_per_label: Counter = field(default_factory=Counter)
    hidden_skipped: int = 0


def _is_hidden(name: str) -> bool:
    # Unix convention; also skips .DS_Store, .git, Thumbs-style tool droppings starting with '.'.
    return name.startswith(".")


def _invalid_name_reason(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "file or folder name is not valid UTF-8"
    if any(ch in name for ch in "\n\r"):
        return "name contains a line break"
    return None


def list_folder_per_class(input_base: str) -> Listing:
    """`<input_base>/<label>/**/<file>`: each top-level folder is a class, searched recursively."""
    if is_uri(input_base):
        return _list_remote_folders(input_base)
    if not os.path.isdir(input_base):
        raise ValueError(f"Image folder {input_base!r} does not exist or is not a directory.")
    listing = Listing()
    root = os.path.realpath(input_base)
    with os.scandir(input_base) as entries:
        top_level = sorted(entries, key=lambda e: e.name)
    for entry in top_level:
        if _is_hidden(entry.name):
            listing.hidden_skipped += 1
            continue
        bad_name = _invalid_name_reason(entry.name)
        if bad_name:
            listing.rejects.append(Reject(repr(entry.name), "", f"{v.INVALID_NAME}: {bad_name}"))
            continue
        outside = _link_outside(entry.path, root)
        if outside:
            listing.rejects.append(Reject(entry.name + ("/" if entry.is_dir() else ""), "", outside))
            continue
        if entry.is_dir():  # follows symlinks; a looping top-level link is not a dir and is reported below
            _walk_class_folder(input_base, entry.name, listing, root)
        else:
            listing.rejects.append(Reject(entry.name, "", f"{v.NOT_IN_CLASS_FOLDER}: files must sit inside a "
                                                          f"class folder (<input_base>/<label>/<file>)"))
    return listing


def _link_outside(path: str, root: str) -> str | None:
    """The reject reason when `path` is a symbolic link whose target lies outside the data root `root` (a realpath)."""
    if not os.path.islink(path):
        return None
    target = os.path.realpath(path)
    if os.path.commonpath([target, root]) == root:
        return None
    return (f"{v.LINK_OUTSIDE_DATA_ROOT}: symbolic link to {os.readlink(path)!r} leads outside the data folder "
            f"(to {target!r}); copy the data in or link the data folder itself")


def _image_named_folder(rel: str) -> str | None:
    if not rel.lower().endswith(IMAGE_FILE_SUFFIXES):
        return None
    return f"{v.IMAGE_NAMED_FOLDER}: a folder named like an image file; not searched (rename it if it holds images)"


def _walk_class_folder(input_base: str, label: str, listing: Listing, root: str) -> None:
    label_dir = os.path.join(input_base, label)
    listing.files_per_label[label] += 0
    visited = {os.path.realpath(label_dir)}
    walk_errors: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(label_dir, followlinks=True, onerror=walk_errors.append):
        kept_dirs = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            rel = _relative(full, input_base)
            if _is_hidden(name):
                listing.hidden_skipped += 1
                continue
            problem = _link_outside(full, root) or _image_named_folder(name)
            if problem:
                listing.rejects.append(Reject(rel + "/", label, problem))
                continue
            real = os.path.realpath(full)
            if real in visited:
                # Following it again would walk the same files forever (or list them twice).
                listing.rejects.append(Reject(rel + "/", label, f"{v.SYMLINK_LOOP}: directory link leads back to "
                                                                 f"{_relative(real, input_base)!r}, already scanned"))
                continue
            visited.add(real)
            kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            if _is_hidden(name):
                listing.hidden_skipped += 1
                continue
            full = os.path.join(dirpath, name)
            rel = _relative(full, input_base)
            bad_name = _invalid_name_reason(name)
            if bad_name:
                listing.rejects.append(Reject(repr(rel), label, f"{v.INVALID_NAME}: {bad_name}"))
                continue
            outside = _link_outside(full, root)
            if outside:
                listing.rejects.append(Reject(rel, label, outside))
                continue
            listing.candidates.append(ImageCandidate(rel, label, full, ""))
            listing.files_per_label[label] += 1
    for error in walk_errors:
        where = _relative(error.filename, input_base) if error.filename else label
        listing.rejects.append(Reject(where + "/", label, f"{v.UNREADABLE}: cannot list folder: {error.strerror}"))


def _relative(path: str, input_base: str) -> str:
    return os.path.relpath(path, input_base).replace(os.sep, "/")


def _list_remote_folders(input_base: str) -> Listing:
    import tensorflow as tf  # noqa: PLC0415 - only object-store paths need TF; local listings and CLI checks run without it

    if not tf.io.gfile.isdir(input_base):
        raise ValueError(f"Image folder {input_base!r} does not exist or is not a directory.")
    listing = Listing()
    base = input_base.rstrip("/")
    for name in sorted(tf.io.gfile.listdir(base)):
        name = name.rstrip("/")
        if _is_hidden(name):
            listing.hidden_skipped += 1
            continue
        full = f"{base}/{name}"
        if not tf.io.gfile.isdir(full):
            listing.rejects.append(Reject(name, "", f"{v.NOT_IN_CLASS_FOLDER}: files must sit inside a class "
                                                    f"folder (<input_base>/<label>/<file>)"))
            continue
        listing.files_per_label[name] += 0
        for dirpath, _, filenames in tf.io.gfile.walk(full):
            for file_name in sorted(filenames):
                if _is_hidden(file_name):
                    listing.hidden_skipped += 1
                    continue
                location = f"{dirpath.rstrip('/')}/{file_name}"
                listing.candidates.append(ImageCandidate(location[len(base) + 1:], name, location, ""))
                listing.files_per_label[name] += 1
    return listing


def resolve_manifest_path(manifest_dir: str, path: str) -> str:
    if is_uri(path) or os.path.isabs(path):
        return path
    if is_uri(manifest_dir):
        return posixpath.join(manifest_dir, path)
    return os.path.join(manifest_dir, path)


def _missing_columns_error(manifest_path: str, columns: list[str], label_required: bool = True) -> ValueError | None:
    needed = (MANIFEST_PATH_COLUMN, MANIFEST_LABEL_COLUMN) if label_required else (MANIFEST_PATH_COLUMN,)
    missing = [c for c in needed if c not in columns]
    if not missing:
        return None
    wanted = "'path,label' (and optionally 'split')" if label_required else "'path' (and optionally 'label')"
    return ValueError(f"Manifest {manifest_path!r} lacks column(s) {missing}; it needs a header row with "
                      f"{wanted}, found columns {columns}.")


def _header_columns(header: list[str]) -> list[str]:
    return [str(c).strip().lower() for c in header]


def check_manifest_header(manifest_path: str, label_required: bool = True) -> None:
    """Reads only the header row of a local manifest and fails at once, with a clear message, when the file is
    missing, not UTF-8 text, or lacks the path/label columns (so a run stops in a second, not after the pipeline
    has started). Object-store manifests are checked when the executor reads them. Without `label_required` (images
    to classify, not to train on) only `path` is needed."""
    if is_uri(manifest_path):
        return
    try:
        with open(manifest_path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f), [])
    except FileNotFoundError:
        raise ValueError(f"Manifest {manifest_path!r} does not exist.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"Manifest {manifest_path!r} is not a readable UTF-8 CSV file: {exc}") from None
    error = _missing_columns_error(manifest_path, _header_columns(header), label_required)
    if error:
        raise error


def read_manifest(manifest_path: str, split_names: list[str], allow_paths_outside: bool = False,
                  label_required: bool = True) -> Listing:
    """CSV with columns path,label and optional split (values = split names; empty = by hash). A path leading out
    of the manifest's folder (absolute, `../`, another bucket, a link out of it) is a reject unless
    `allow_paths_outside`: a manifest from elsewhere must not make the pipeline read (and keep) any file it likes.
    Without `label_required` the label column may be missing or a cell empty: the candidate's label is then ''."""
    import pandas as pd  # noqa: PLC0415 - pandas only for manifests; the folder layout and CLI checks run without it

    check_manifest_header(manifest_path, label_required)
    try:
        if is_uri(manifest_path):
            import tensorflow as tf  # noqa: PLC0415 - only object-store paths need TF; local listings and CLI checks run without it

            with tf.io.gfile.GFile(manifest_path, "rb") as f:
                frame = pd.read_csv(f, dtype=str, keep_default_na=False, skipinitialspace=True)
        else:
            frame = pd.read_csv(manifest_path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise ValueError(f"Manifest {manifest_path!r} does not exist.") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ValueError(f"Manifest {manifest_path!r} is not a readable UTF-8 CSV file: {exc}") from None
    frame.columns = _header_columns(list(frame.columns))
    error = _missing_columns_error(manifest_path, list(frame.columns), label_required)
    if error:
        raise error
    has_label = MANIFEST_LABEL_COLUMN in frame.columns
    has_split = MANIFEST_SPLIT_COLUMN in frame.columns
    if has_split:
        values = frame[MANIFEST_SPLIT_COLUMN].str.strip().str.lower()
        unknown = sorted(set(values) - set(split_names) - {""})
        if unknown:
            raise ValueError(f"Manifest {manifest_path!r}: column 'split' has value(s) {unknown}; allowed are "
                             f"{split_names} or an empty cell (split by the stable hash of the path).")
        frame[MANIFEST_SPLIT_COLUMN] = values
    manifest_dir = posixpath.dirname(manifest_path) if is_uri(manifest_path) else os.path.dirname(
        os.path.abspath(manifest_path))
    listing = Listing()
    for row_number, row in enumerate(frame.itertuples(index=False), start=2):  # row 1 is the header
        record = row._asdict()
        path = record[MANIFEST_PATH_COLUMN].strip()
        label = record[MANIFEST_LABEL_COLUMN].strip() if has_label else ""
        if not path or (label_required and not label):
            listing.rejects.append(Reject(path, label, f"{v.INVALID_MANIFEST_ROW}: row {row_number} has an empty "
                                                       f"{'path' if not path else 'label'}"))
            continue
        bad_label = _invalid_name_reason(label)
        if bad_label:
            listing.rejects.append(Reject(path, repr(label), f"{v.INVALID_MANIFEST_ROW}: row {row_number}: label "
                                                             f"{bad_label}"))
            continue
        split = record[MANIFEST_SPLIT_COLUMN] if has_split else ""
        location = resolve_manifest_path(manifest_dir, path)
        if not allow_paths_outside and not is_within(location, manifest_dir):
            listing.rejects.append(Reject(path, label, f"{v.PATH_OUTSIDE_MANIFEST}: row {row_number} leads outside "
                                                       f"the manifest's folder {manifest_dir!r}; move the file in, "
                                                       "or pass --allow-paths-outside-manifest"))
            continue
        listing.candidates.append(ImageCandidate(path, label, location, split))
        listing.files_per_label[label] += 1
    return listing
