"""ServedModelBaseline: the currently served model version as the Evaluator's baseline (the KFP variant's stand-in
for the resolver the open-source KFP backend cannot run), tested on its executor and under LocalDagRunner."""
import os
import sys
import time

import pytest
from tfx.dsl.component.experimental.annotations import OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types.standard_artifacts import Examples, Model

from serving import versions

# ---------------------------------------------------------------------------------------------------------------------
# ServedModelBaseline under LocalDagRunner, with the real Evaluator and Pusher on a tiny binary classifier.
# Accuracy of a toy model with decision threshold t on x uniform in [-1, 1] is 1 - |t| / 2.

_TOY_ROWS = 200


@component
def ToyEvalExamples(examples: OutputArtifact[Examples]):
    import os

    import tensorflow as tf
    from tfx.types import artifact_utils

    examples.split_names = artifact_utils.encode_split_names(["eval"])
    split_dir = os.path.join(examples.uri, "Split-eval")
    tf.io.gfile.makedirs(split_dir)
    with tf.io.TFRecordWriter(os.path.join(split_dir, "data.gz"), options="GZIP") as writer:
        for i in range(_TOY_ROWS):
            x = -1.0 + (i + 0.5) * 2.0 / _TOY_ROWS
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[x])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x > 0)])),
            }))
            writer.write(example.SerializeToString())


@component
def ToyTrainer(decision_threshold: Parameter[float], model: OutputArtifact[Model]):
    import tensorflow as tf
    from tfx.utils import path_utils

    class ThresholdModel(tf.Module):
        def __init__(self, threshold):
            super().__init__()
            self.threshold = tf.Variable(threshold, dtype=tf.float32)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            x = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([], tf.float32)})["x"]
            return {"probabilities": tf.sigmoid(50.0 * (x - self.threshold))}

    toy = ThresholdModel(decision_threshold)
    tf.saved_model.save(toy, path_utils.serving_model_dir(model.uri), signatures={"serving_default": toy.serve})


def _toy_pipeline(root, serving_model_dir, decision_threshold, when_nothing_served="no_baseline"):
    import tensorflow_model_analysis as tfma
    from tfx import v1 as tfx

    from components.served_model_baseline.component import ServedModelBaseline
    from pipelines import configs
    from pipelines.beam_args import with_worker_code_source

    examples = ToyEvalExamples()
    trainer = ToyTrainer(decision_threshold=decision_threshold)
    baseline = ServedModelBaseline(serving_model_dir=serving_model_dir, candidate_model=trainer.outputs["model"],
                                   when_nothing_served=when_nothing_served)
    eval_config = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="serving_default", label_key="label",
                                    prediction_key="probabilities")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
            class_name="BinaryAccuracy",
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": 0.6}),
                change_threshold=tfma.GenericChangeThreshold(direction=tfma.MetricDirection.HIGHER_IS_BETTER,
                                                             absolute={"value": -0.01})))])])
    evaluator = tfx.components.Evaluator(examples=examples.outputs["examples"], model=trainer.outputs["model"],
                                         baseline_model=baseline.outputs["baseline_model"], eval_config=eval_config)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)))
    return tfx.dsl.Pipeline(
        pipeline_name="served_baseline_toy", pipeline_root=str(root / "pipeline_root"),
        components=[examples, trainer, baseline, evaluator, pusher], enable_cache=False,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(root / "metadata.db")),
        beam_pipeline_args=with_worker_code_source(["--direct_num_workers=1"], configs.IMAGE))


def _latest_outputs(metadata_path, type_name):
    """Output artifacts (per key) of the newest execution of a component type, straight from MLMD."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2
    from tfx import v1 as tfx

    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    executions = store.get_executions_by_type(type_name)
    assert executions, f"no {type_name} execution recorded"
    newest = max(executions, key=lambda e: e.id)
    outputs = {}
    for event in store.get_events_by_execution_ids([newest.id]):
        if event.type == metadata_store_pb2.Event.OUTPUT:
            key = event.path.steps[0].key
            outputs.setdefault(key, []).extend(store.get_artifacts_by_id([event.artifact_id]))
    return outputs


def _served_versions(serving_model_dir):
    return sorted(versions.version_directories(serving_model_dir) or {})


def test_served_model_baseline_first_run_without_baseline_then_compares_with_served(tmp_path, monkeypatch):
    from tfx import v1 as tfx

    # TFX's Beam executors parse sys.argv + the Beam arguments as absl flags: pytest's own `-v` would be read as absl's
    # --verbosity and swallow the next argument (IllegalFlagValueError), so the pipeline sees no pytest arguments.
    monkeypatch.setattr(sys, "argv", sys.argv[:1])

    serving_model_dir = str(tmp_path / "serving" / "toy")
    metadata_path = str(tmp_path / "metadata.db")
    baseline_type = "components.served_model_baseline.component.ServedModelBaseline"

    # Run 1: nothing served. No baseline artifact, so the Evaluator blesses on the value threshold (accuracy 1.0).
    tfx.orchestration.LocalDagRunner().run(_toy_pipeline(tmp_path, serving_model_dir, decision_threshold=0.0))
    assert _latest_outputs(metadata_path, baseline_type).get("baseline_model", []) == []
    [blessing] = _latest_outputs(metadata_path, "tfx.components.evaluator.component.Evaluator")["blessing"]
    assert blessing.custom_properties["blessed"].int_value == 1
    assert "baseline_model" not in blessing.custom_properties  # rubber-stamped: no baseline was compared
    [first_version] = _served_versions(serving_model_dir)

    # Run 2: candidate accuracy 0.85 passes the value threshold (0.6) but is worse than the served 1.0 by more than
    # 0.01, so only a comparison with the served version can refuse it.
    time.sleep(1.1)  # Pusher versions are whole seconds
    tfx.orchestration.LocalDagRunner().run(_toy_pipeline(tmp_path, serving_model_dir, decision_threshold=0.3))
    [baseline] = _latest_outputs(metadata_path, baseline_type)["baseline_model"]
    assert baseline.custom_properties["served_version"].int_value == first_version
    assert baseline.custom_properties["baseline_source"].string_value == "served"
    assert os.path.isfile(os.path.join(baseline.uri, "Format-Serving", "saved_model.pb"))
    [blessing] = _latest_outputs(metadata_path, "tfx.components.evaluator.component.Evaluator")["blessing"]
    assert blessing.custom_properties["baseline_model"].string_value == baseline.uri
    assert blessing.custom_properties["blessed"].int_value == 0
    assert _served_versions(serving_model_dir) == [first_version]  # not pushed


def _run_executor(tmp_path, serving_model_dir, when_nothing_served, candidate_uri=None):
    from tfx.types import standard_artifacts

    from components.served_model_baseline import executor

    output = standard_artifacts.Model()
    output.uri = str(tmp_path / "out" / "baseline_model")
    inputs = {}
    if candidate_uri:
        candidate = standard_artifacts.Model()
        candidate.uri = candidate_uri
        inputs["candidate_model"] = [candidate]
    output_dict = {"baseline_model": [output]}
    executor.Executor().Do(inputs, output_dict, {"serving_model_dir": serving_model_dir,
                                                 "when_nothing_served": when_nothing_served})
    return output_dict["baseline_model"]


def _fake_saved_model(path):
    os.makedirs(path)
    with open(os.path.join(path, "saved_model.pb"), "wb") as f:
        f.write(b"\x08\x01")


def test_served_version_is_highest_numeric_dir_with_a_saved_model(tmp_path):
    from components.served_model_baseline.executor import find_served_version

    serving = tmp_path / "model"
    assert find_served_version(str(serving)) is None  # first run: base path not created yet
    serving.mkdir()
    assert find_served_version(str(serving)) is None
    _fake_saved_model(serving / "7")
    _fake_saved_model(serving / "12")
    (serving / "30").mkdir()  # incomplete: TF Serving could not load it either
    _fake_saved_model(serving / ".12-tmp")
    _fake_saved_model(serving / "v40")
    served = find_served_version(str(serving))
    assert (served.version, served.path) == (12, str(serving / "12"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        find_served_version(str(tmp_path / "file"))


def test_kubeflow_mode_publishes_the_candidate_when_nothing_is_served(tmp_path):
    candidate = tmp_path / "trainer" / "model"
    _fake_saved_model(candidate / "Format-Serving")
    [baseline] = _run_executor(tmp_path, str(tmp_path / "empty"), "candidate", str(candidate))
    assert baseline.get_string_custom_property("baseline_source") == "candidate"
    assert os.path.isfile(os.path.join(baseline.uri, "Format-Serving", "saved_model.pb"))
    assert _run_executor(tmp_path, str(tmp_path / "empty"), "no_baseline", str(candidate)) == []
    with pytest.raises(ValueError, match="candidate_model"):
        _run_executor(tmp_path, str(tmp_path / "empty"), "candidate")


# ---------------------------------------------------------------------------------------------------------------------
# The executor on its own: which version it picks, what it refuses, the lineage it records, and that it copies.

def _fake_version(path, content: bytes, name="saved_model.pb"):
    """A version folder whose files say which one it is (`content`), so a test can tell what was copied."""
    os.makedirs(os.path.join(path, "variables"))
    with open(os.path.join(path, name), "wb") as f:
        f.write(content)
    with open(os.path.join(path, "variables", "variables.index"), "wb") as f:
        f.write(content + b"-variables")


def _copied(baseline, relative="saved_model.pb"):
    with open(os.path.join(baseline.uri, "Format-Serving", relative), "rb") as f:
        return f.read()


def test_a_base_path_that_is_a_file_is_refused_in_either_mode(tmp_path):
    """A misconfigured serving_model_dir must fail the run, not pass as "nothing served yet" (which would bless on
    the value thresholds alone, or compare the candidate with itself)."""
    not_a_dir = tmp_path / "flowers"
    not_a_dir.write_text("not a model base path")
    candidate = tmp_path / "trainer" / "model"
    _fake_version(candidate / "Format-Serving", b"candidate")
    for mode in ("no_baseline", "candidate"):
        with pytest.raises(ValueError, match="exists but is not a directory"):
            _run_executor(tmp_path, str(not_a_dir), mode, str(candidate))
    assert not (tmp_path / "out" / "baseline_model" / "Format-Serving").exists()


def test_the_newest_complete_version_is_copied_and_an_incomplete_newer_one_skipped(tmp_path):
    serving = tmp_path / "serving" / "flowers"
    _fake_version(serving / "3", b"v3")
    _fake_version(serving / "4", b"v4-text", name="saved_model.pbtxt")  # a text SavedModel is complete too
    os.makedirs(serving / "5" / "variables")  # a push still being written: no saved_model.pb yet
    (serving / "6").write_text("a file named like a version")
    [baseline] = _run_executor(tmp_path, str(serving), "no_baseline")
    assert baseline.get_string_custom_property("baseline_source") == "served"
    assert baseline.get_int_custom_property("served_version") == 4
    assert baseline.get_string_custom_property("served_model_path") == str(serving / "4")
    assert _copied(baseline, "saved_model.pbtxt") == b"v4-text"
    assert _copied(baseline, "variables/variables.index") == b"v4-text-variables"
    assert sorted(os.listdir(os.path.join(baseline.uri, "Format-Serving"))) == ["saved_model.pbtxt", "variables"]


def test_the_served_version_wins_over_the_candidate_in_kubeflow_mode(tmp_path):
    serving = tmp_path / "serving" / "flowers"
    _fake_version(serving / "17", b"served")
    candidate = tmp_path / "trainer" / "model"
    _fake_version(candidate / "Format-Serving", b"candidate")
    [baseline] = _run_executor(tmp_path, str(serving), "candidate", str(candidate))
    assert baseline.get_string_custom_property("baseline_source") == "served"
    assert baseline.get_int_custom_property("served_version") == 17
    assert baseline.get_string_custom_property("served_model_path") == str(serving / "17")
    assert _copied(baseline) == b"served"


def test_the_baseline_is_a_copy_that_later_pushes_and_garbage_collection_do_not_change(tmp_path):
    import shutil

    serving = tmp_path / "serving" / "flowers"
    _fake_version(serving / "1", b"v1")
    [baseline] = _run_executor(tmp_path, str(serving), "no_baseline")
    assert not os.path.samefile(os.path.join(baseline.uri, "Format-Serving"), serving / "1")

    # The served folder is rewritten in place, then garbage-collected after a newer push.
    (serving / "1" / "saved_model.pb").write_bytes(b"rewritten")
    (serving / "1" / "extra.txt").write_text("added later")
    _fake_version(serving / "2", b"v2")
    shutil.rmtree(serving / "1")
    assert _copied(baseline) == b"v1"
    assert _copied(baseline, "variables/variables.index") == b"v1-variables"
    assert not os.path.exists(os.path.join(baseline.uri, "Format-Serving", "extra.txt"))
    assert baseline.get_int_custom_property("served_version") == 1


def test_the_candidate_as_baseline_is_a_copy_with_candidate_lineage(tmp_path):
    candidate = tmp_path / "trainer" / "model"
    _fake_version(candidate / "Format-Serving", b"candidate")
    [baseline] = _run_executor(tmp_path, str(tmp_path / "nothing-served"), "candidate", str(candidate))
    assert baseline.get_string_custom_property("baseline_source") == "candidate"
    assert baseline.get_int_custom_property("served_version") == -1
    assert not baseline.has_custom_property("served_model_path")  # nothing is served: no path to point at
    assert _copied(baseline) == b"candidate"
    (candidate / "Format-Serving" / "saved_model.pb").write_bytes(b"changed")
    assert _copied(baseline) == b"candidate"
    assert (candidate / "Format-Serving" / "variables" / "variables.index").read_bytes() == b"candidate-variables"


@pytest.mark.parametrize("when_nothing_served", [None, ""])
def test_an_unset_mode_means_no_baseline(tmp_path, when_nothing_served):
    candidate = tmp_path / "trainer" / "model"
    _fake_version(candidate / "Format-Serving", b"candidate")
    assert _run_executor(tmp_path, str(tmp_path / "nothing-served"), when_nothing_served, str(candidate)) == []


def test_the_executor_validates_when_nothing_served_and_the_candidate_count(tmp_path):
    from tfx.types import standard_artifacts

    from components.served_model_baseline import executor

    serving = tmp_path / "serving" / "flowers"
    _fake_version(serving / "1", b"v1")
    # Checked before looking at the server, so a typo fails on the first run and on every later one alike.
    for base_path in (str(serving), str(tmp_path / "nothing-served")):
        with pytest.raises(ValueError, match=r"when_nothing_served must be one of "
                                             r"\('no_baseline', 'candidate', 'empty'\), got 'served'"):
            _run_executor(tmp_path, base_path, "served")

    candidates = []
    for name in ("a", "b"):
        _fake_version(tmp_path / name / "Format-Serving", name.encode())
        candidates.append(standard_artifacts.Model())
        candidates[-1].uri = str(tmp_path / name)
    output = standard_artifacts.Model()
    output.uri = str(tmp_path / "out" / "two")
    with pytest.raises(ValueError, match="needs exactly one candidate_model input artifact, got 2"):
        executor.Executor().Do({"candidate_model": candidates}, {"baseline_model": [output]},
                               {"serving_model_dir": str(tmp_path / "nothing-served"),
                                "when_nothing_served": "candidate"})
    with pytest.raises(ValueError, match="non-empty path"):
        executor.find_served_version("")


def test_the_component_validates_its_arguments_and_declares_its_spec():
    from tfx.types import standard_artifacts

    from components.served_model_baseline.component import ServedModelBaseline

    candidate = ToyTrainer(decision_threshold=0.0).outputs["model"]
    with pytest.raises(ValueError, match="non-empty path"):
        ServedModelBaseline(serving_model_dir="", candidate_model=candidate)
    with pytest.raises(ValueError, match=r"must be one of \('no_baseline', 'candidate', 'empty'\), got 'latest'"):
        ServedModelBaseline(serving_model_dir="/models/flowers", when_nothing_served="latest")
    with pytest.raises(ValueError, match="needs candidate_model"):
        ServedModelBaseline(serving_model_dir="/models/flowers", when_nothing_served="candidate")

    plain = ServedModelBaseline(serving_model_dir="/models/flowers")
    assert plain.exec_properties == {"serving_model_dir": "/models/flowers", "when_nothing_served": "no_baseline"}
    assert "candidate_model" not in plain.inputs  # optional: ordering after the Trainer is up to the pipeline
    assert plain.outputs["baseline_model"].type is standard_artifacts.Model
    ordered = ServedModelBaseline(serving_model_dir="gs://b/models/flowers", candidate_model=candidate,
                                  when_nothing_served="candidate")
    assert ordered.inputs["candidate_model"] is candidate
    assert ordered.exec_properties["when_nothing_served"] == "candidate"


def test_use_candidate_when_nothing_served_switches_every_baseline_of_a_pipeline(tmp_path):
    from tfx import v1 as tfx

    from components.served_model_baseline.component import ServedModelBaseline, use_candidate_when_nothing_served

    def pipeline(*components):
        return tfx.dsl.Pipeline(pipeline_name="switch", pipeline_root=str(tmp_path), components=list(components))

    trainer = ToyTrainer(decision_threshold=0.0)
    first = ServedModelBaseline(serving_model_dir="/models/a", candidate_model=trainer.outputs["model"])
    second = ServedModelBaseline(serving_model_dir="/models/b",
                                 candidate_model=trainer.outputs["model"]).with_id("second_baseline")
    assert use_candidate_when_nothing_served(pipeline(trainer, first, second)) == [first, second]
    assert [c.exec_properties["when_nothing_served"] for c in (first, second)] == ["candidate", "candidate"]

    with pytest.raises(ValueError, match="has no ServedModelBaseline"):
        use_candidate_when_nothing_served(pipeline(ToyTrainer(decision_threshold=0.0)))
    unordered = ServedModelBaseline(serving_model_dir="/models/c")
    with pytest.raises(ValueError, match="needs candidate_model"):
        use_candidate_when_nothing_served(pipeline(unordered))
    assert unordered.exec_properties["when_nothing_served"] == "no_baseline"  # left as it was


def test_empty_mode_publishes_an_artifact_with_no_model_when_nothing_is_served(tmp_path):
    """What a warm start reads on a first run (KFP records the artifact; TFX's entrypoint needs exactly one)."""
    from serving import versions

    [published] = _run_executor(tmp_path, str(tmp_path / "nothing"), "empty")
    assert published.get_string_custom_property("baseline_source") == "nothing"
    assert not versions.is_complete(os.path.join(published.uri, "Format-Serving"))
