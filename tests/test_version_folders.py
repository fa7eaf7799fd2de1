"""serving.versions (the one rule for which version folders a model base path holds) and the pusher built on it."""
from __future__ import annotations

import os

from components.atomic_pusher.executor import next_version
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


def test_next_version_sorts_after_every_existing_one(tmp_path):
    base = tmp_path / "serving"
    (base / "99999999999").mkdir(parents=True)  # a version from the future
    (base / ".staging-123456789999-ab12").mkdir()
    assert next_version(str(base), now=1000) == 100000000000
