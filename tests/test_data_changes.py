"""What changed since the last run, from the data source's listing and file stats: a run with nothing new stops at
once, `schedule --when-new N` waits for N changes, relabels and deletions count."""
from __future__ import annotations

import os
import time

from image_fixtures import make_shapes_dataset

from components.image_example_gen import snapshot
from pipelines.local_runner import RunOptions, run_pipeline
from pipelines.schedule import ScheduledRetraining, too_few_changes


def test_new_changed_and_deleted_files_in_a_class_folder_layout(tmp_path):
    images = make_shapes_dataset(tmp_path, n_per_class=3, seed=0)
    before = snapshot.take(data_dir=str(tmp_path))
    assert len(before) == 9 and {state.label for state in before.values()} == {"circle", "square", "triangle"}
    assert snapshot.changes(before, snapshot.take(data_dir=str(tmp_path))).count == 0

    make_shapes_dataset(tmp_path, n_per_class=1, classes=("circle",), seed=1, start_index=50)
    rewritten = images["square"][0]
    rewritten.write_bytes(rewritten.read_bytes() + b"\0")
    images["triangle"][0].unlink()
    moved = images["triangle"][1]
    moved.rename(tmp_path / "circle" / moved.name)  # a folder layout's relabel: a file in another class folder
    change = snapshot.changes(before, snapshot.take(data_dir=str(tmp_path)))
    assert (len(change.new), change.changed, len(change.deleted)) == (2, (str(rewritten),), 2)
    assert change.describe() == "2 new, 1 changed, 2 deleted"


def test_a_relabel_in_a_manifest_is_a_change(tmp_path):
    make_shapes_dataset(tmp_path / "images", n_per_class=2, seed=0)
    rows = ["path,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(tmp_path.glob("images/*/*"))]
    manifest = tmp_path / "labels.csv"
    manifest.write_text("\n".join(rows) + "\n")
    before = snapshot.take(manifest=str(manifest))
    rows[1] = rows[1].rsplit(",", 1)[0] + ",square"
    manifest.write_text("\n".join(rows) + "\n")
    change = snapshot.changes(before, snapshot.take(manifest=str(manifest)))
    assert len(change.relabelled) == 1 and change.count == 1 and change.describe() == "1 relabelled"


def test_a_run_with_the_same_images_and_settings_stops_before_tfx(tmp_path):
    make_shapes_dataset(tmp_path / "data", n_per_class=2, seed=0)
    options = RunOptions(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    snapshot.save(options.snapshot_path, snapshot.take(data_dir=options.data_dir), options.settings_key())
    started = time.monotonic()
    result = run_pipeline(options)
    assert result.nothing_changed and not result.pushed and time.monotonic() - started < 5
    assert not os.path.exists(tmp_path / "out" / "tfx_pipeline_output")  # TFX never started


def test_when_new_holds_a_slot_until_enough_images_changed(tmp_path):
    make_shapes_dataset(tmp_path / "data", n_per_class=2, seed=0)
    options = RunOptions(data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "out"))
    hold = too_few_changes(options, minimum=3)
    assert hold() is None  # no run yet: the first one goes
    snapshot.save(options.snapshot_path, snapshot.take(data_dir=options.data_dir), options.settings_key())
    make_shapes_dataset(tmp_path / "data", n_per_class=1, classes=("circle", "square"), seed=1, start_index=50)
    assert hold() == "2 new since the last run, fewer than --when-new 3"
    runs = []
    job = ScheduledRetraining(run_once=lambda: runs.append(1), lock_path=str(tmp_path / "lock"), hold=hold)
    job()
    assert (runs, job.attempts, job.skipped) == ([], 0, 1)
    make_shapes_dataset(tmp_path / "data", n_per_class=1, classes=("triangle",), seed=2, start_index=50)
    job()
    assert (runs, job.attempts) == ([1], 1)
