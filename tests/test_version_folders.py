"""serving.versions (the one rule for which version folders a model base path holds) and the pusher built on it."""
from __future__ import annotations

import os
import time

from components.atomic_pusher.executor import next_version, publish
from serving import versions


def _saved_model(path, variables=b"v" * 1000):
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, "variables", "variables.data-00000-of-00001"), "wb") as f:
        f.write(variables)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"\x08\x01")


def test_version_directories_follow_tf_servings_rule(tmp_path):
    base = tmp_path / "model"
    assert versions.version_directories(str(base)) is None
    for name in ("7", "0012", ".staging-30-ab12", "tmp-40", "v50", str(2**63)):
        (base / name).mkdir(parents=True)
    (base / "60").write_text("a file, not a version")
    assert versions.version_directories(str(base)) == {7: str(base / "7"), 12: str(base / "0012")}
    assert versions.parse_version("123/") == 123  # object-store listings end directories with '/'
    assert versions.parse_version("١٢") is None  # digits, but not the ASCII ones int64 parsing takes


def test_newest_complete_version_skips_a_half_written_one(tmp_path):
    base = tmp_path / "model"
    _saved_model(base / "7")
    (base / "9" / "variables").mkdir(parents=True)  # no saved_model.pb yet: TF Serving could not load it
    assert versions.newest_complete_version(str(base)) == (7, str(base / "7"))


def test_publish_puts_a_complete_version_above_every_existing_one(tmp_path):
    model, base = tmp_path / "trainer", tmp_path / "serving"
    _saved_model(model)
    (base / "99999999999").mkdir(parents=True)  # a version from the future: the next one still sorts after it
    assert next_version(str(base), now=1000) == 100000000000
    for atomic_rename in (True, False):
        path, version = publish(str(model), str(base), atomic_rename=atomic_rename)
        assert path == str(base / version)
        assert versions.is_complete(path)
        assert os.path.getsize(os.path.join(path, "variables", "variables.data-00000-of-00001")) == 1000
    published = versions.version_directories(str(base))
    assert sorted(published) == [99999999999, 100000000000, 100000000001]
    assert sorted(os.listdir(base)) == sorted(os.path.basename(p) for p in published.values())  # no staging left
    # Copied in place (object stores), saved_model.pb is written after every other file.
    in_place = published[100000000001]
    others = [os.stat(os.path.join(root, name)).st_mtime_ns for root, _, names in os.walk(in_place)
              for name in names if name != "saved_model.pb"]
    assert os.stat(os.path.join(in_place, "saved_model.pb")).st_mtime_ns >= max(others)


def test_publish_sweeps_staging_folders_a_dead_push_left(tmp_path):
    """A push killed mid-copy leaves its hidden .staging-* folder behind (TF Serving ignores it, the disk does not):
    the next push removes those in which nothing was written for an hour, and keeps a copy still in progress."""
    from components.atomic_pusher.executor import STALE_STAGING_SECONDS, sweep_stale_staging

    model, base = tmp_path / "trainer", tmp_path / "serving"
    _saved_model(model)
    dead, running = base / ".staging-100-dead0000", base / ".staging-200-live0000"
    old = time.time() - STALE_STAGING_SECONDS - 60
    for folder in (dead, running):
        _saved_model(folder)
        for root, dirs, files in os.walk(folder):
            for entry in [".", *dirs, *files]:
                os.utime(os.path.join(root, entry), (old, old))
    os.utime(running / "saved_model.pb")  # started long ago, still writing: one file is fresh
    path, _ = publish(str(model), str(base), atomic_rename=True)
    assert sorted(os.listdir(base)) == sorted([running.name, os.path.basename(path)])
    assert sweep_stale_staging(str(base), now=time.time() + 2 * STALE_STAGING_SECONDS) == [str(running)]
