"""Model versions: discovery on disk, version policies, labels, availability-preserving loads and unloads, status.

Mirrors TF Serving's FileSystemStoragePathSource + AvailabilityPreservingPolicy + ServableStateMonitor: numeric child
directories of base_path are versions (serving.versions has the rule); the policy picks the aspired ones; a new version
is loaded before the old one is unloaded, so requests never see a gap; every version ever seen stays in the status
list, newest first.

Failed loads (a corrupt, empty or half-copied version) never hold up the others:
- a failed version shows its load error in the status at once, while it waits for a retry (LOADING) and once it has
  given up (END);
- retries are scheduled, not slept through: each poll retries the versions whose interval has passed, and a version
  stops being retried as soon as it is no longer aspired (a newer one was pushed), as in TF Serving;
- while an aspired version is failing, the newest versions that did not fail stand in for it (with `latest`, the
  newest good version is served within a poll or two, wherever the broken ones sit);
- a failed version whose directory changes (a copy that was still in progress) is tried again on the next poll.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import grpc
import tensorflow as tf

from serving.errors import ServingError, invalid, not_found
from serving.saved_model_version import SavedModelVersion
from serving.servable import VersionLifecycle
from serving.versions import version_directories

log = logging.getLogger(__name__)

START, LOADING, AVAILABLE, UNLOADING, END = "START", "LOADING", "AVAILABLE", "UNLOADING", "END"


class VersionRecord:
    __slots__ = ("version", "state", "error_code", "error_message", "loaded", "attempts", "retry_at", "fingerprint")

    def __init__(self, version: int):
        self.version = version
        self.state = START
        self.error_code, self.error_message = "OK", ""
        self.loaded: VersionLifecycle | None = None
        self.attempts = 0
        self.retry_at = 0.0  # time.monotonic() of the next retry while LOADING after a failure
        self.fingerprint: tuple = ()  # the version directory's files when the last attempt failed

    @property
    def failed(self) -> bool:
        """The last load attempt failed: waiting for a retry (LOADING) or given up (END)."""
        return self.error_code != "OK" and self.state in (LOADING, END)


class ServedModel:
    def __init__(self, config):
        self.config = config
        self.name = config.name
        self.versions: dict[int, VersionRecord] = {}
        self.labels: dict[str, int] = {}
        self.configured = True
        self.transition_lock = threading.Lock()  # one sync (poll or reload) per model at a time

    def latest_available(self) -> VersionRecord | None:
        for version in sorted(self.versions, reverse=True):
            if self.versions[version].state == AVAILABLE:
                return self.versions[version]
        return None


def directory_fingerprint(path: str) -> tuple:
    """(relative path, size, mtime) of every file under `path`: changes while a copy is still in progress."""
    entries = []
    for root, _, files in tf.io.gfile.walk(path):
        for name in files:
            full = os.path.join(root, name)
            try:
                info = tf.io.gfile.stat(full)
            except tf.errors.OpError:
                continue
            entries.append((os.path.relpath(full, path), info.length, info.mtime_nsec))
    return tuple(sorted(entries))


def aspired_versions(config, available: dict[int, str], failed: set[int] = frozenset()) -> tuple[set[int], set[int]]:
    """(policy's versions, versions to serve): the version policy over the versions on disk, and the same policy over
    the versions that did not fail, which serve while the policy's own versions are failing (no fallback for
    `specific`: exactly those versions were asked for)."""
    policy = config.model_version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return set(available), set(available) - failed
    if kind == "specific":
        wanted = set(policy.specific.versions)
        missing = wanted - set(available)
        if missing:
            log.warning("Model %s: requested versions %s not found under %s", config.name, sorted(missing),
                        config.base_path)
        wanted &= set(available)
        return wanted, wanted - failed
    count = max(1, policy.latest.num_versions) if kind == "latest" else 1
    newest_first = sorted(available, reverse=True)
    return set(newest_first[:count]), set([v for v in newest_first if v not in failed][:count])


class ModelManager:
    def __init__(self, *, poll_seconds: float = 1.0, load_retries: int = 5, load_retry_interval_s: float = 60.0,
                 tags=("serve",), allow_labels_for_unavailable=False, warmup=None, session_config=None,
                 version_loader=SavedModelVersion):
        self.poll_seconds = poll_seconds
        self.load_retries = load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self.tags = tags
        self.allow_labels_for_unavailable = allow_labels_for_unavailable
        self.warmup = warmup  # callable(VersionLifecycle) run before a version becomes AVAILABLE
        self.session_config = session_config
        self.version_loader = version_loader  # (name, version, path, tags, session_config) -> a loaded version
        self.models: dict[str, ServedModel] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._config_lock = threading.Lock()

    # ------------------------------------------------------------------------------------------------- config
    def apply_config(self, config, *, startup: bool = False, deadline: float | None = None,
                     on_applied=lambda: None) -> None:
        """Makes `config` (a ModelServerConfig) the served set; blocks until new models are AVAILABLE, or until
        `deadline` (time.monotonic(); None: no limit) has passed between two load steps. `on_applied()` runs once the
        config is in place, before the wait.

        The labels are checked first, as TF Serving's ServerCore::ReloadConfig does (UpdateModelVersionLabelMap before
        AddModelsViaModelConfigList): a config whose labels fail changes nothing, not even the versions it adds.
        Raises ServingError: FAILED_PRECONDITION (labels), UNKNOWN (models that did not become available),
        DEADLINE_EXCEEDED (another config was being applied, or the new models were still loading: the config is then
        in place and they keep loading on the polls).
        """
        timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._config_lock.acquire(timeout=timeout):
            raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while another model config "
                               "was being applied")
        try:
            wanted = {c.name: c for c in config.model_config_list.config}
            with self._lock:
                labels = self._checked_labels(wanted)
                for name, model in self.models.items():
                    if name not in wanted:
                        model.configured = False
                new_models = []
                for name, model_config in wanted.items():
                    model = self.models.get(name)
                    if model is None or not model.configured:
                        model = ServedModel(model_config)
                        self.models[name] = model
                        new_models.append(model)
                    else:
                        model.config = model_config
                    model.labels = labels[name]
            for model in list(self.models.values()):
                if not model.configured:
                    self._unload_all(model)
            for model in self.models.values():
                if model.configured:
                    self.sync(model)
            on_applied()
            failures = self._wait_for_models(new_models, startup, deadline)
            if failures:
                raise ServingError(grpc.StatusCode.UNKNOWN, f"{len(failures)} servable(s) did not become available: "
                                   + ", ".join(failures))
        finally:
            self._config_lock.release()

    def _checked_labels(self, wanted: dict) -> dict[str, dict[str, int]]:
        """{model: {label: version}} of the new config by TF Serving's rule (server_core.cc
        UpdateModelVersionLabelMap), checked against the versions serving now: a label may point only at an AVAILABLE
        version; with --allow_version_labels_for_unavailable_models also at another one, but only if the label is new
        or keeps its version (moving a label to a version not loaded yet fails either way)."""
        labels = {}
        for name, model_config in wanted.items():
            model = self.models.get(name)
            served = model if model is not None and model.configured else None
            for label, version in model_config.version_labels.items():
                record = served.versions.get(version) if served is not None else None
                current = served.labels.get(label, version) if served is not None else version
                allowed = self.allow_labels_for_unavailable and current == version
                if not allowed and (record is None or record.state != AVAILABLE):
                    raise ServingError(grpc.StatusCode.FAILED_PRECONDITION,
                                       f"Request to assign label to version {version} of model {name}, which is not "
                                       "currently available for inference")
            labels[name] = dict(model_config.version_labels)
        return labels

    def _wait_for_models(self, models, startup: bool, deadline: float | None) -> list[str]:
        """Waits until each model serves, or its versions settled without any serving; returns the failures."""
        failures = []
        for model in models:
            warned = False
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() > deadline:
                    raise ServingError(grpc.StatusCode.DEADLINE_EXCEEDED,
                                       f"Deadline exceeded while model {model.name} was loading (base path "
                                       f"{model.config.base_path}); the new config is applied and its models keep "
                                       "loading")
                versions = version_directories(model.config.base_path)
                window, serve = aspired_versions(model.config, versions or {}, self._failed(model, versions or {}))
                wanted = window | serve
                records = [model.versions.get(v) for v in wanted]
                serving = any(r is not None and r.state == AVAILABLE for r in records)
                settled = all(r is not None and (r.state in (AVAILABLE, END) or (r.failed and serving))
                              for r in records)
                if wanted and settled:
                    break
                if not wanted and not warned:
                    log.warning("No versions of servable %s found under base path %s. Did you forget to name your "
                                "leaf directory as a number (eg. '/1/')?", model.name, model.config.base_path)
                    warned = True
                time.sleep(max(0.2, min(self.poll_seconds, 1.0)) if self.poll_seconds > 0 else 1.0)
                self.sync(model)
            if model.latest_available() is not None:
                continue
            for version, record in sorted(model.versions.items()):
                if record.failed:
                    failures.append(f"{{name: {model.name} version: {version}}} due to error: {record.error_message}")
        return failures

    # -------------------------------------------------------------------------------------------- transitions
    @staticmethod
    def _failed(model: ServedModel, available: dict[int, str]) -> set[int]:
        return {v for v, record in model.versions.items() if record.failed and v in available}

    def sync(self, model: ServedModel) -> None:
        """One poll of `model`'s base path: load (or retry) aspired versions, newest first, then unload the rest."""
        with model.transition_lock:
            if not model.configured:
                return
            available = version_directories(model.config.base_path)
            if available is None:
                log.error("Could not find base path %s for servable %s", model.config.base_path, model.name)
                return
            window, serve = aspired_versions(model.config, available, self._failed(model, available))
            for version in sorted(window | serve, reverse=True):
                self._load_or_retry(model, version, available[version], version in window)
            for version, record in model.versions.items():
                if record.failed and record.state == LOADING and version not in window:
                    with self._lock:
                        record.state = END  # keeps its error; TF Serving stops retrying un-aspired versions too
                    log.info("Servable {name: %s version: %d} is no longer aspired; not retrying its load",
                             model.name, version)
            # A version that just failed hands over to the next good one in this same poll.
            window, serve = aspired_versions(model.config, available, self._failed(model, available))
            for version in sorted(serve, reverse=True):
                self._load_or_retry(model, version, available[version], version in window)
            wanted = window | serve
            # Availability preserving: drop un-wanted versions only once a wanted one serves (or none is wanted).
            if not wanted or any(model.versions.get(v) and model.versions[v].state == AVAILABLE for v in wanted):
                for version in sorted(model.versions):
                    record = model.versions[version]
                    if version not in wanted and record.state == AVAILABLE:
                        self._unload(model, record)

    def _load_or_retry(self, model: ServedModel, version: int, path: str, in_policy: bool) -> None:
        """Loads a wanted version not loaded yet; retries a failed one when its directory changed, or (while the
        policy still wants it) when its retry is due."""
        record = model.versions.get(version)
        if record is None or (record.state == END and not record.failed):
            self._attempt(model, VersionRecord(version), path)
        elif record.failed and directory_fingerprint(path) != record.fingerprint:
            log.info("Servable {name: %s version: %d} changed on disk since it failed to load; trying again",
                     model.name, version)
            self._attempt(model, VersionRecord(version), path)
        elif record.failed and record.state == LOADING and in_policy and time.monotonic() >= record.retry_at:
            self._attempt(model, record, path)

    def _attempt(self, model: ServedModel, record: VersionRecord, path: str) -> None:
        """One load attempt of `record`'s version; on failure the error goes to the status and a retry is scheduled
        (max_num_load_retries, load_retry_interval_micros) or the version ends in END."""
        with self._lock:
            model.versions[record.version] = record
            record.state = LOADING
            record.attempts += 1
        log.info("Loading servable: {name: %s version: %d} from %s", model.name, record.version, path)
        started = time.monotonic()
        try:
            loaded = self.version_loader(model.name, record.version, path, self.tags, self.session_config)
            try:
                if self.warmup is not None:
                    self.warmup(loaded)
            except Exception:
                loaded.unload()
                raise
        except Exception as error:  # any load failure ends up in status; other versions keep serving
            failure = error if isinstance(error, ServingError) else ServingError.from_tf(error)
            message, code = failure.message, failure.code.name
            retry = record.attempts <= self.load_retries and not self._stop.is_set()
            log.error("Loading servable {name: %s version: %d} failed (attempt %d)%s: %s", model.name,
                      record.version, record.attempts,
                      f", retrying in {self.load_retry_interval_s:g}s" if retry else "", message)
            fingerprint = directory_fingerprint(path)
            with self._lock:
                record.error_code, record.error_message = code, message
                record.fingerprint = fingerprint
                record.retry_at = time.monotonic() + self.load_retry_interval_s
                record.state = LOADING if retry else END
            return
        with self._lock:
            record.loaded = loaded
            record.error_code, record.error_message = "OK", ""
            record.state = AVAILABLE
        log.info("Successfully loaded servable version {name: %s version: %d} in %.2fs", model.name, record.version,
                 time.monotonic() - started)

    def _unload(self, model: ServedModel, record: VersionRecord) -> None:
        with self._lock:
            record.state = UNLOADING
            loaded, record.loaded = record.loaded, None
        if loaded is not None:
            loaded.unload()  # waits for in-flight requests on this version
        with self._lock:
            record.state = END
        log.info("Unloaded servable version {name: %s version: %d}", model.name, record.version)

    def _unload_all(self, model: ServedModel) -> None:
        with model.transition_lock:
            for record in list(model.versions.values()):
                if record.state == AVAILABLE:
                    self._unload(model, record)

    # ------------------------------------------------------------------------------------------------ polling
    def start_polling(self) -> None:
        if self.poll_seconds <= 0:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="file_system_poll", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for model in list(self.models.values()):
                if self._stop.is_set():
                    return
                try:
                    self.sync(model)
                except Exception:  # keep polling the other models
                    log.exception("Polling model %s failed", model.name)

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        for model in list(self.models.values()):
            model.configured = False
            self._unload_all(model)

    # ------------------------------------------------------------------------------------------------ lookups
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> VersionLifecycle:
        """The servable for a request, acquired (call .release()); TF Serving's errors otherwise."""
        if not name:
            raise invalid("ModelSpec has no name specified.")
        with self._lock:
            model = self.models.get(name)
            if label:
                if model is None or not model.configured or label not in model.labels:
                    raise invalid(f"Unrecognized servable version label: {label}")
                version = model.labels[label]
            if version is None:
                record = model.latest_available() if model is not None and model.configured else None
                request = f"Latest({name})"
            else:
                record = model.versions.get(version) if model is not None and model.configured else None
                request = f"Specific({name}, {version})"
            loaded = record.loaded if record is not None and record.state == AVAILABLE else None
            if loaded is None or not loaded.acquire():
                raise not_found(f"Servable not found for request: {request}")
            return loaded

    def is_configured(self, name: str) -> bool:
        with self._lock:
            model = self.models.get(name)
            return model is not None and model.configured

    def status(self, name: str, version: int | None = None) -> list[VersionRecord]:
        with self._lock:
            model = self.models.get(name)
            if model is None or not model.versions:
                raise not_found(f"Could not find any versions of model {name}")
            if version is not None:
                if version not in model.versions:
                    raise not_found(f"Could not find version {version} of model {name}")
                return [model.versions[version]]
            return [model.versions[v] for v in sorted(model.versions, reverse=True)]

