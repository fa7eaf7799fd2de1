"""Local scheduled retraining (`image-retrain schedule`): cron parsing, the run lock, failures that do not stop the
schedule, and continuous training end to end (pipeline run -> model server -> new images -> the scheduled run fires ->
the new version is served with no failed request -> a run on corrupted labels is neither blessed nor pushed)."""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from image_fixtures import make_shapes_dataset

from serving import versions
from serving.client import RestClient
from serving.grpc_client import GrpcClient
from serving.process import model_server, stop


@pytest.mark.parametrize("expression, expected_day_of_week", [
    ("0 3 * * 0", "sun"),            # cron: 0 = Sunday (APScheduler 3 alone would read Monday)
    ("0 3 * * 7", "sun"),
    ("0 3 * * 1-5", "mon,tue,wed,thu,fri"),
    ("0 0 3 * * SUN-SAT", "sun,mon,tue,wed,thu,fri,sat"),
    ("0 0 3 ? * */2", "sun,tue,thu,sat"),
    ("0 0 3 * * *", "*"),
])
def test_cron_accepts_5_and_6_fields_with_cron_weekdays(expression, expected_day_of_week):
    from datetime import datetime

    from pipelines.schedule import parse_cron

    trigger = parse_cron(expression, timezone="UTC")
    fields = {f.name: str(f) for f in trigger.fields}
    assert fields["day_of_week"] == expected_day_of_week
    assert fields["hour"] == "3" and fields["second"] == "0"
    if expected_day_of_week == "sun":  # 2025-01-01 is a Wednesday
        assert trigger.get_next_fire_time(None, datetime(2025, 1, 1, tzinfo=trigger.timezone)).day == 5


@pytest.mark.parametrize("expression, message", [
    ("3 * * *", "4 fields"),
    ("0 0 25 * * *", "hour"),
    ("0 3 * * 8", "day of week"),
    ("0 3 * * 5-1", "backwards"),
])
def test_cron_errors_are_clear(expression, message):
    from pipelines.schedule import parse_cron

    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


def test_a_failed_run_is_logged_and_the_schedule_goes_on(tmp_path, caplog):
    from pipelines.schedule import ScheduledRetraining, parse_cron, run_schedule

    calls = []

    def run_once():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("corrupt data set")
        return "ok"

    job = ScheduledRetraining(run_once, lock_path=str(tmp_path / "schedule.lock"), max_runs=2)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="image_retrain.schedule"):
        run_schedule(parse_cron("* * * * * *"), job, run_now=True)  # every second; returns after 2 runs
    assert (job.attempts, job.failures, len(calls)) == (2, 1, 2)
    assert time.monotonic() - started < 10
    assert "run 1 failed" in caplog.text and "RuntimeError: corrupt data set" in caplog.text
    assert "run 2 finished" in caplog.text


def test_overlapping_runs_are_prevented_by_the_lock(tmp_path, caplog):
    from pipelines.schedule import ScheduledRetraining, exclusive_lock

    lock_path = str(tmp_path / "schedule.lock")
    job = ScheduledRetraining(lambda: pytest.fail("must not run while another run holds the lock"), lock_path)
    with open(lock_path, "a+") as other_holder:  # another scheduler process, as far as flock is concerned
        fcntl.flock(other_holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with caplog.at_level("WARNING", logger="image_retrain.schedule"):
            job()
        fcntl.flock(other_holder.fileno(), fcntl.LOCK_UN)
    assert (job.attempts, job.skipped) == (0, 1)
    assert "still holds" in caplog.text
    with exclusive_lock(lock_path) as acquired:
        assert acquired


def test_run_refuses_to_start_while_a_scheduled_run_holds_the_lock(tmp_path, capsys):
    """`image-retrain run` on the output folder of a schedule whose run is going: both would push into, and record
    in, the same folders; the run says so and stops before TFX starts."""
    from pipelines.cli import main

    (tmp_path / "data" / "circle").mkdir(parents=True)
    output = tmp_path / "output"
    output.mkdir()
    with open(output / "schedule.lock", "a+") as scheduled_run:  # the scheduler's flock, as another process holds it
        fcntl.flock(scheduled_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        started = time.monotonic()
        code = main(["run", "--data-dir", str(tmp_path / "data"), "--output-dir", str(output)])
        fcntl.flock(scheduled_run.fileno(), fcntl.LOCK_UN)
    assert code == 1 and time.monotonic() - started < 30
    assert f"another run (a scheduled one?) holds {output / 'schedule.lock'}" in capsys.readouterr().err
    assert sorted(os.listdir(output)) == ["schedule.lock"]  # nothing of a pipeline run was written


def test_schedule_cli_rejects_a_bad_cron_before_running(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["schedule", "--cron", "every day", "--data-dir", str(tmp_path)]) == 2
    assert "cron 'every day'" in capsys.readouterr().err


# --- Continuous training end to end -----------------------------------------------------------------------------------

MODEL_NAME = "shapes"
FIRST_CLASSES = ("circle", "square")
NEW_CLASS = "triangle"
ACCURACY_THRESHOLD = 0.8
# 60/20/20 hash buckets instead of 80/10/10: a test split of ~10 images instead of ~5 keeps the accuracies meaningful.
SPLIT_RATIOS = (6, 2, 2)
EPOCHS = 30


def _wait_for(predicate, timeout_s: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-4000:] if log is not None and log.exists() else ""
    exit_code = None if process is None else process.poll()
    raise AssertionError(f"timed out waiting for {what} (process exit code {exit_code})\n{tail}")


def _version_states(rest) -> dict[int, str]:
    """{version: state} from the REST status endpoint, {} while the server is not answering yet."""
    from serving.client import ServerError

    try:
        status = rest.status(MODEL_NAME)
    except (OSError, ServerError):
        return {}
    return {int(s["version"]): s["state"] for s in status["model_version_status"]}


def _grpc_predict(client, image: bytes):
    """(served version, label) of one image over gRPC Predict, as a TF Serving client sends it."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[image],
                                    tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
    response = client.predict(MODEL_NAME, {"image_bytes": tensor}, signature_name="serving_default")
    labels = [label.decode() for label in response.outputs["label"].string_val]
    assert len(labels) == 1, response
    return response.model_spec.version.value, labels[0]


class ClientLoop:
    """Clients predicting all the time (one gRPC, one REST thread); every failed or malformed answer is recorded."""

    def __init__(self, grpc_target: str, rest_url: str, probes: dict[str, bytes], pause_s: float = 0.05):
        self.grpc_target, self.rest_url, self.probes, self.pause_s = grpc_target, rest_url, probes, pause_s
        self.failures: list[str] = []
        self.grpc_answers: list[tuple[int, str, str]] = []  # (version, true label, predicted label)
        self.rest_answers = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._grpc_loop, daemon=True),
                         threading.Thread(target=self._rest_loop, daemon=True)]

    def _grpc_loop(self):
        client = GrpcClient(self.grpc_target, timeout_s=30)
        try:
            while not self._stop.is_set():
                for truth, image in self.probes.items():
                    try:
                        version, label = _grpc_predict(client, image)
                        self.grpc_answers.append((version, truth, label))
                    except Exception as error:  # noqa: BLE001 - any failure is what the test counts
                        self.failures.append(f"gRPC {truth}: {error!r}")
                    self._stop.wait(self.pause_s)
        finally:
            client.close()

    def _rest_loop(self):
        client = RestClient(self.rest_url, timeout_s=30)
        while not self._stop.is_set():
            for truth, image in self.probes.items():
                try:
                    [prediction] = client.predict_images(MODEL_NAME, [image])
                    assert prediction.label and prediction.top_k, prediction
                    self.rest_answers += 1
                except Exception as error:  # noqa: BLE001
                    self.failures.append(f"REST {truth}: {error!r}")
                self._stop.wait(self.pause_s)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def _write_corrupted_manifest(data_dir: Path, manifest: Path) -> tuple[int, int]:
    """A manifest over the same images whose train/eval labels carry no information about the image: within each true
    class, the labels go round-robin through every class. Every fifth image keeps its true label in a pinned test
    split, the curated hold-out the blessing is judged on (had the test labels been scrambled too, the good baseline
    would score at chance on them as well, and the baseline comparison would be a coin toss). Returns (corrupted rows,
    test rows)."""
    classes = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    rows, corrupted, test = [], 0, 0
    for true_label in classes:
        for index, path in enumerate(sorted((data_dir / true_label).iterdir())):
            relative = path.relative_to(manifest.parent).as_posix()
            if index % 5 == 0:
                rows.append((relative, true_label, "test"))
                test += 1
            else:
                wrong = classes[(index + classes.index(true_label)) % len(classes)]
                rows.append((relative, wrong, "eval" if index % 5 == 1 else "train"))
                corrupted += wrong != true_label
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return corrupted, test


def _version_dirs(serving_model_dir: str) -> list[str]:
    return [str(version) for version in sorted(versions.version_directories(serving_model_dir) or {})]


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_continuous_training_scheduled_run_swaps_versions_without_failed_requests(tmp_path):
    from pipelines.local_runner import RunOptions, collect_result, run_pipeline
    data = tmp_path / "data"
    output = tmp_path / "out"
    make_shapes_dataset(data, n_per_class=15, classes=FIRST_CLASSES, seed=0)
    options = RunOptions(data_dir=str(data), model_name=MODEL_NAME, output_dir=str(output),
                         accuracy_threshold=ACCURACY_THRESHOLD, split_ratios=SPLIT_RATIOS,
                         hyperparameters={"epochs": EPOCHS, "fine_tune_variables": 0})

    # 1. First run: a two-class model, blessed (no baseline yet) and pushed as the first version.
    first = run_pipeline(options)
    assert first.blessed and first.pushed, first
    assert first.accuracy >= ACCURACY_THRESHOLD and first.baseline_accuracy is None
    assert first.embeddings_computed == 30 and first.embeddings_cached == 0
    first_version = int(first.pushed_version)
    assert _version_dirs(options.serving_model_dir) == [str(first_version)]

    # 2. Serve it: the real server in its own process, polling the model base path every second.
    server_log = tmp_path / "server.log"
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with contextlib.ExitStack() as cleanup, open(server_log, "wb") as log_file, model_server(
            f"--model_name={MODEL_NAME}", f"--model_base_path={options.serving_model_dir}",
            "--file_system_poll_wait_seconds=1", stdout=log_file, stderr=subprocess.STDOUT, env=environment) as server:
        rest = RestClient(server.rest_url)
        _wait_for(lambda: _version_states(rest) == {first_version: "AVAILABLE"}, 180, "the first version to be served",
                  server.process, server_log)

        # 3. New images arrive: more circles, and a class the served model has never seen.
        make_shapes_dataset(data, n_per_class=10, classes=("circle",), seed=1, start_index=100)
        make_shapes_dataset(data, n_per_class=15, classes=(NEW_CLASS,), seed=0)
        probe_dir = tmp_path / "probes"  # held-out images the clients keep sending
        probes = {name: paths[0].read_bytes() for name, paths in make_shapes_dataset(
            probe_dir, n_per_class=1, classes=FIRST_CLASSES + (NEW_CLASS,), seed=99, start_index=1).items()}

        # 4. The scheduled run fires: `image-retrain schedule` on a cron slot (every 5 s, no --run-now), one run,
        #    while the clients predict without pause from before the run until the new version has replaced the old.
        schedule_log = tmp_path / "schedule.log"
        command = [sys.executable, "-m", "pipelines.cli", "schedule", "--cron", "*/5 * * * * *", "--max-runs", "1",
                   "--data-dir", str(data), "--output-dir", str(output), "--model-name", MODEL_NAME,
                   "--accuracy-threshold", str(ACCURACY_THRESHOLD),
                   "--split-ratios", ",".join(map(str, SPLIT_RATIOS)), "--epochs", str(EPOCHS),
                   "--fine-tune-variables", "0"]
        with ClientLoop(server.grpc_address, server.rest_url, probes) as clients:
            with open(schedule_log, "wb") as log_file:
                scheduler = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=environment)
            cleanup.callback(stop, [scheduler])
            _wait_for(lambda: scheduler.poll() is not None, 900, "the scheduled run", log=schedule_log)
            schedule_text = schedule_log.read_text(errors="replace")
            assert scheduler.returncode == 0, schedule_text[-4000:]
            second = collect_result(options, options.path("tfx_metadata", options.pipeline_name, "metadata.db"))
            assert second.blessed and second.pushed, (second, schedule_text[-4000:])
            second_version = int(second.pushed_version)
            assert second_version > first_version
            _wait_for(lambda: _version_states(rest) == {second_version: "AVAILABLE", first_version: "END"}, 120,
                      "the new version to replace the old one", server.process, server_log)
            time.sleep(1.0)  # a little traffic on the new version alone
        assert not clients.failures, clients.failures[:10]

        # The schedule, not a manual start, ran the pipeline: one cron firing, finished, blessed and pushed.
        assert "next run at" in schedule_text and "run 1 started" in schedule_text, schedule_text[-4000:]
        assert "run 1 finished" in schedule_text and f"pushed version {second_version}" in schedule_text
        assert "1 run(s), 0 failed" in schedule_text
        # Only the 25 new images were embedded; the first 30 came from the cache.
        assert (second.embeddings_computed, second.embeddings_cached) == (25, 30)
        assert second.accuracy >= ACCURACY_THRESHOLD
        assert second.baseline_accuracy is not None and second.accuracy > second.baseline_accuracy

        # The clients were answered by the old version, then by the new one, which knows the new class.
        answered = [version for version, _, _ in clients.grpc_answers]
        assert set(answered) == {first_version, second_version}, set(answered)
        assert answered == sorted(answered), "an answer from the old version came after the new one had answered"
        assert clients.rest_answers > 10
        new_answers = [(truth, label) for version, truth, label in clients.grpc_answers if version == second_version]
        assert {truth for truth, _ in new_answers} == set(probes)
        assert all(truth == label for truth, label in new_answers), new_answers
        assert all(label in FIRST_CLASSES for version, _, label in clients.grpc_answers if version == first_version)

        # 5. Corrupted labels (the same images): the run is judged on the true-label test split, is not blessed,
        #    pushes nothing, and the server keeps answering with the good version.
        manifest = tmp_path / "corrupted.csv"
        corrupted, test_rows = _write_corrupted_manifest(data, manifest)
        assert corrupted >= 25 and test_rows >= 10
        versions_before = _version_dirs(options.serving_model_dir)
        third = run_pipeline(dataclasses.replace(options, data_dir=None, manifest=str(manifest)))
        assert (third.embeddings_computed, third.embeddings_cached) == (0, 55)
        assert not third.blessed and not third.pushed and third.pushed_version is None, third
        # It fails both checks: the absolute threshold, and the comparison with the blessed baseline.
        assert third.accuracy < ACCURACY_THRESHOLD, third
        assert third.baseline_accuracy is not None and third.accuracy < third.baseline_accuracy - 0.01, third
        assert _version_dirs(options.serving_model_dir) == versions_before
        assert not [p for p in os.listdir(options.serving_model_dir) if not p.isdigit()]  # no staging leftovers
        time.sleep(3)  # three poll cycles: nothing new to load
        assert _version_states(rest) == {second_version: "AVAILABLE", first_version: "END"}
        client = GrpcClient(server.grpc_address)
        try:
            for truth, image in probes.items():
                assert _grpc_predict(client, image) == (second_version, truth)
        finally:
            client.close()
