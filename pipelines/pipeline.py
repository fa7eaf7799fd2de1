"""`create_pipeline()`: the one component list that runs locally (LocalDagRunner) and on Kubeflow (KubeflowV2DagRunner).

ingest (ImageExampleGen) -> StatisticsGen -> SchemaGen -> ExampleValidator
       -> ImageEmbedder (pretrained module, cached embeddings) -> [Tuner (KerasTuner), with --tune]
       -> Trainer (Keras head, optionally fine-tuned module; raw-bytes serving export)
       -> baseline (latest blessed model, or the version currently served)
       -> Evaluator (TFMA, blessing; the baseline is dropped when it was trained on other classes)
       -> ModelReport (HTML/PNG) and AtomicPusher (blessed models only, new version under the serving base path)
"""
from __future__ import annotations

from typing import Sequence

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.atomic_pusher.component import AtomicPusher
from components.image_embedder.component import ImageEmbedder
from components.image_example_gen.component import ImageExampleGen
from components.model_report.component import ModelReport
from components.served_model_baseline.component import ServedModelBaseline
from components.vocabulary_checked_evaluator.component import VocabularyCheckedEvaluator
from image_retrain import contract
from pipelines import configs
from pipelines.options import BASELINES


def eval_config(accuracy_threshold: float, baseline_tolerance: float = configs.BASELINE_TOLERANCE) -> tfma.EvalConfig:
    """Blessing: accuracy >= threshold, and >= baseline - tolerance when a baseline exists. The confusion matrix is
    what the report derives per-class precision and recall from (the class count is only known after ingestion)."""
    accuracy = tfma.MetricConfig(
        class_name="SparseCategoricalAccuracy",  # reported as contract.ACCURACY_METRIC
        threshold=tfma.MetricThreshold(
            value_threshold=tfma.GenericValueThreshold(lower_bound={"value": accuracy_threshold}),
            change_threshold=tfma.GenericChangeThreshold(
                direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -baseline_tolerance}),
        ),
    )
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(signature_name="classify", label_key=contract.LABEL_KEY, prediction_key="scores")],
        slicing_specs=[tfma.SlicingSpec()],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            accuracy,
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
        ])],
    )


def create_pipeline(
    *,
    pipeline_name: str,
    pipeline_root: str,
    serving_model_dir: str,
    data_root: str | None = None,
    manifest_path: str | None = None,
    module_handle: str = configs.MODULE_HANDLE,
    embedding_cache_dir: str | None = None,
    hyperparameters: dict | None = None,
    tune: bool = False,
    tune_trials: int = configs.TUNER_TRIALS,
    eval_accuracy_threshold: float = configs.EVAL_ACCURACY_THRESHOLD,
    baseline: str = "latest_blessed",
    split_ratios: Sequence[int] = configs.SPLIT_RATIOS,
    report_dir: str | None = None,
    enable_cache: bool = False,
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
    embed_beam_pipeline_args: list[str] | None = None,
    worker_image: str = configs.IMAGE,
) -> tfx.dsl.Pipeline:
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
    components = []

    example_gen = ImageExampleGen(input_base=data_root, manifest=manifest_path, split_ratios=tuple(split_ratios))
    components.append(example_gen)

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    components.append(statistics_gen)
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    components.append(schema_gen)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    components.append(example_validator)

    embedder = ImageEmbedder(examples=example_gen.outputs["examples"], module_handle=module_handle,
                             cache_dir=embedding_cache_dir, batch_size=configs.EMBEDDING_BATCH_SIZE)
    if embed_beam_pipeline_args:
        # After the pipeline's arguments, so the embedding stage's own runner settings win.
        embedder.with_beam_pipeline_args(embed_beam_pipeline_args)
    components.append(embedder)

    training_config = {"module_handle": module_handle, "hyperparameters": dict(hyperparameters or {})}
    tuned = None
    if tune:
        tuner = tfx.components.Tuner(
            tuner_fn=configs.TUNER_FN,
            examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
            train_args=tfx.proto.TrainArgs(splits=[contract.TRAIN_SPLIT]),
            eval_args=tfx.proto.EvalArgs(splits=[contract.EVAL_SPLIT]),
            custom_config=dict(training_config, tuner_trials=tune_trials),
        )
        components.append(tuner)
        tuned = tuner.outputs["best_hyperparameters"]
    trainer = tfx.components.Trainer(
        run_fn=configs.RUN_FN,
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        hyperparameters=tuned,
        train_args=tfx.proto.TrainArgs(splits=[contract.TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[contract.EVAL_SPLIT]),
        custom_config=training_config,
    )
    components.append(trainer)

    if baseline == "latest_blessed":
        resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        components.append(resolver)
        baseline_model = resolver.outputs["model"]
    else:
        # Open-source KFP cannot run TFX resolver executors: compare against what is actually being served.
        served = ServedModelBaseline(serving_model_dir=serving_model_dir, candidate_model=trainer.outputs["model"])
        components.append(served)
        baseline_model = served.outputs["baseline_model"]

    evaluator = VocabularyCheckedEvaluator(
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        example_splits=[contract.TEST_SPLIT],
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        eval_config=eval_config(eval_accuracy_threshold),
    ).with_id("Evaluator")  # the standard component's id: same task and MLMD names as a stock Evaluator
    components.append(evaluator)

    report = ModelReport(
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        split=contract.TEST_SPLIT,
        report_dir=report_dir,
    )
    components.append(report)

    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_model_dir)),
    )
    components.append(pusher)

    return tfx.dsl.Pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_args_with_worker_image(beam_pipeline_args or [], worker_image),
    )


# The Beam arguments that tell TFX where workers get their code. Given none, TFX builds an sdist of its own source for
# every Beam step (3 s, and 52 MB in a new temporary folder it never removes: a full /tmp after a few hundred runs) to
# stage to workers that have TFX already: the local runner, and the project's image everywhere else.
TFX_DEPENDENCY_FLAGS = ("--extra_package", "--extra_packages", "--setup_file", "--requirements_file",
                        "--sdk_container_image", "--worker_harness_container_image")


def beam_args_with_worker_image(beam_args: list[str], image: str) -> list[str]:
    """`beam_args` naming `image` as the Beam workers' image, unless they already say where workers get their code
    (the user's arguments win)."""
    if any(arg.split("=")[0] in TFX_DEPENDENCY_FLAGS for arg in beam_args):
        return list(beam_args)
    return [f"--sdk_container_image={image}", *beam_args]
