"""Staged rollout: which versions of a model the servers load, and which one each label names.

The state lives in a TF Serving model config file beside the versions (serving.model_format.ROLLOUT_CONFIG_FILE),
which tensorflow_model_server and ours re-read every `--model_config_file_poll_wait_seconds`:

    model_config_list { config { name: "flowers" base_path: "/models/flowers" model_platform: "tensorflow"
      model_version_policy { specific { versions: 17 versions: 18 } }
      version_labels { key: "stable" value: 17 } version_labels { key: "canary" value: 18 } } }

Clients address `stable` or `canary` (gRPC ModelSpec.version_label, REST /labels/<label>); with no canary out,
`canary` names the stable version, so a client routed to it is always answered.

TF Serving lets a label name only a version it has already loaded (an unloaded one fails the whole reload, and the
new versions with it; serving_config.md prescribes two steps). So a new version always joins first under no label
(step 1), and a label moves onto it only once every server reports it AVAILABLE (step 2). Each move is a list of
configs (`plan_*`); `apply` writes them in order, waiting in between. Without servers to ask, it writes what it can
and leaves the next step in ROLLOUT_NEXT_FILE for `image-retrain rollout advance`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from image_retrain.paths import is_uri, join
from serving.client import RestClient, ServerError
from serving.model_format import ROLLOUT_CONFIG_FILE, ROLLOUT_NEXT_FILE

STABLE, CANARY = "stable", "canary"


@dataclasses.dataclass(frozen=True)
class Rollout:
    model_name: str
    base_path: str
    versions: tuple[int, ...]    # loaded (the `specific` version policy), ascending
    stable: int | None = None    # None until the first version has loaded
    canary: int | None = None    # == stable when no canary is out

    @property
    def labelled(self) -> set[int]:
        return {version for version in (self.stable, self.canary) if version is not None}

    @property
    def pending(self) -> tuple[int, ...]:
        """Versions loaded under no label: waiting for a label to move onto them."""
        return tuple(version for version in self.versions if version not in self.labelled)

    def but(self, **changes) -> Rollout:
        changed = dataclasses.replace(self, **changes)
        return dataclasses.replace(changed, versions=tuple(sorted(set(changed.versions))))

    def keeping_labelled(self) -> Rollout:
        """The same labels, and only the versions they name."""
        return self.but(versions=tuple(self.labelled))

    def to_config(self) -> model_server_config_pb2.ModelServerConfig:
        config = model_server_config_pb2.ModelServerConfig()
        model = config.model_config_list.config.add(name=self.model_name, base_path=self.base_path,
                                                    model_platform="tensorflow")
        model.model_version_policy.specific.versions.extend(self.versions)
        for label, version in ((STABLE, self.stable), (CANARY, self.canary)):
            if version is not None:
                model.version_labels[label] = version
        return config

    @classmethod
    def from_config(cls, config: model_server_config_pb2.ModelServerConfig) -> Rollout:
        (model,) = config.model_config_list.config
        labels = dict(model.version_labels)
        return cls(model.name, model.base_path, tuple(sorted(model.model_version_policy.specific.versions)),
                   labels.get(STABLE), labels.get(CANARY))

    def describe(self) -> str:
        pending = f", loading {', '.join(map(str, self.pending))}" if self.pending else ""
        canary = "no canary" if self.canary == self.stable else f"canary {self.canary}"
        return f"{self.model_name}: stable {self.stable}, {canary}{pending}"


class Pending(Exception):
    """A step waits for versions to load and no server was given to ask: `written` is in force, `next` is saved."""

    def __init__(self, written: Rollout, next_step: Rollout):
        super().__init__(f"{written.describe()}; labels move on once version(s) "
                         f"{', '.join(map(str, sorted(next_step.labelled - written.labelled)))} are AVAILABLE: run "
                         f"`image-retrain rollout advance --model-base-path {written.base_path} --server URL`")
        self.written, self.next = written, next_step


# -- the file


def plain_config(model_name: str, base_path: str) -> model_server_config_pb2.ModelServerConfig:
    """The config a server starts with before any rollout: TF Serving's `latest` policy, no labels."""
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name=model_name, base_path=base_path, model_platform="tensorflow")
    return config


def read(base_path: str, name: str = ROLLOUT_CONFIG_FILE) -> Rollout | None:
    """The rollout in force; None when there is none yet: no config file, or a plain one (`plain_config`)."""
    path = join(base_path, name)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    if model.model_version_policy.WhichOneof("policy_choice") != "specific":
        return None
    return Rollout.from_config(config)


def write_plain(model_name: str, base_path: str) -> None:
    """The plain config, unless a config file exists (servers need one before they start)."""
    path = join(base_path, ROLLOUT_CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        tf.io.gfile.makedirs(base_path)
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text_format.MessageToString(plain_config(model_name, base_path)))


def write(rollout: Rollout, name: str = ROLLOUT_CONFIG_FILE) -> None:
    """Atomically where renames are (a local file system); an object store writes an object whole anyway."""
    path = join(rollout.base_path, name)
    text = text_format.MessageToString(rollout.to_config())
    if is_uri(path):
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
        return
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def clear_next(base_path: str) -> None:
    path = join(base_path, ROLLOUT_NEXT_FILE)
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


# -- the moves: each a list of configs to write in order


def plan_canary(current: Rollout | None, version: int, *, model_name: str, base_path: str,
                served: int | None) -> list[Rollout]:
    """`version` out as the canary. With no rollout yet, `served` (the version the servers serve now, or None)
    becomes stable."""
    if current is None:
        current = Rollout(model_name, base_path, (served,), served, served) if served is not None \
            else Rollout(model_name, base_path, ())
    loading = current.but(versions=current.versions + (version,))
    if current.stable is None:  # the first version of all: stable and canary once it has loaded
        return [loading, loading.but(stable=version, canary=version)]
    return [loading, loading.but(canary=version).keeping_labelled()]


def plan_direct(current: Rollout | None, version: int) -> list[Rollout]:
    """`version` to every label (a plain push); nothing to write while no rollout config exists."""
    if current is None:
        return []
    loading = current.but(versions=current.versions + (version,))
    return [loading, loading.but(stable=version, canary=version).keeping_labelled()]


def plan_promote(current: Rollout) -> list[Rollout]:
    if current.canary == current.stable:
        raise ValueError(f"{current.describe()}: there is no canary to promote")
    return [current.but(stable=current.canary).keeping_labelled()]


def plan_rollback(current: Rollout, previous: int | None) -> list[Rollout]:
    """With a canary out: withdraw it. Else back to `previous` (the version before stable)."""
    if current.canary != current.stable:
        return [current.but(canary=current.stable).keeping_labelled()]
    if previous is None:
        raise ValueError(f"{current.describe()}: no earlier version to roll back to")
    loading = current.but(versions=current.versions + (previous,))
    return [loading, loading.but(stable=previous, canary=previous).keeping_labelled()]


# -- writing them


Waiter = Callable[[Rollout, set[int]], None]


def apply(steps: list[Rollout], wait: Waiter | None) -> Rollout | None:
    """Writes each step; before one that puts a label on a version the last step did not label, `wait(step,
    versions)` until they are AVAILABLE. Without `wait`, raises Pending after saving that step as the next one."""
    written = None
    for step in steps:
        newly_labelled = step.labelled - (written.labelled if written else set())
        if written is not None and newly_labelled:
            if wait is None:
                write(step, ROLLOUT_NEXT_FILE)
                raise Pending(written, step)
            wait(written, newly_labelled)
        write(step)
        written = step
    if written is not None:
        clear_next(written.base_path)
    return written


def advance(base_path: str, wait: Waiter) -> Rollout:
    """Writes the step a Pending left behind, once its versions have loaded."""
    current, next_step = read(base_path), read(base_path, ROLLOUT_NEXT_FILE)
    if next_step is None:
        raise ValueError(f"nothing pending under {base_path}")
    return apply([current, next_step], wait)


def servers_waiter(server_urls: list[str], timeout_s: float = 600.0, poll_s: float = 1.0) -> Waiter:
    """Waits until every server (REST base URLs) reports each version AVAILABLE."""

    def wait(rollout: Rollout, versions: set[int]) -> None:
        deadline = time.monotonic() + timeout_s
        missing = [(url, version) for url in server_urls for version in versions]
        while missing:
            missing = [(url, version) for url, version in missing if not _available(url, rollout.model_name, version)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"version(s) {sorted({v for _, v in missing})} of {rollout.model_name} not "
                                   f"AVAILABLE on {sorted({u for u, _ in missing})} after {timeout_s:.0f} s; "
                                   f"{rollout.describe()} stays in force")
            time.sleep(poll_s)

    return wait


def _available(url: str, model_name: str, version: int) -> bool:
    try:
        status = RestClient(url, timeout_s=10).request(f"/v1/models/{model_name}/versions/{version}")
    except (ServerError, OSError):
        return False
    return any(entry.get("state") == "AVAILABLE" for entry in status.get("model_version_status", []))
