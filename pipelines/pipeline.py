"""`create_pipeline()`: the one component list that runs locally (LocalDagRunner) and on Kubeflow (KubeflowV2DagRunner).

fingerprint the input (InputFingerprint: what ingestion would read, for the orchestrator's cache key)
-> ingest (ImageExampleGen) -> StatisticsGen -> SchemaGen -> ExampleValidator
       -> ImageEmbedder (pretrained module, cached embeddings) -> [Tuner (KerasTuner), with --tune]
       -> Trainer (Keras head, optionally fine-tuned module; raw-bytes serving export)
       -> baseline (latest blessed model, or the version currently served)
       -> Evaluator (TFMA, blessing; the baseline is dropped when it was trained on other classes)
       -> ModelReport (HTML/PNG, and the Kubeflow UI's metrics, confusion matrix, HTML and Markdown artifacts)
       -> ServingValidator (the serving stack loads and answers it: TF Serving's op registry and TensorFlow, our server)
       -> AtomicPusher (blessed and validated models only, new version under the serving base path; canary rollout)

What a run may change without rebuilding the pipeline goes through `options.run_parameter` (data location, split
ratios, contract.RUN_HYPERPARAMETERS, accuracy threshold): plain values for local runs, Kubeflow run parameters in a
compiled package.
"""
from __future__ import annotations

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.atomic_pusher.component import AtomicPusher
from components.hyperparameter_trainer.component import HyperparameterTrainer
from components.image_embedder.component import ImageEmbedder
from components.image_example_gen.component import ImageExampleGen
from components.input_fingerprint.component import InputFingerprint
from components.model_report.component import ModelReport
from components.served_model_baseline.component import ServedModelBaseline
from components.served_model_baseline.executor import EMPTY
from components.serving_validator.component import ServingValidator
from components.vocabulary_checked_evaluator.component import VocabularyCheckedEvaluator
from image_retrain import contract
from image_retrain.paths import absolute
from pipelines import configs
from pipelines.beam_args import with_cluster_workers_image, with_worker_code_source
from pipelines.options import PipelineOptions


def eval_config(accuracy_threshold: float, baseline_tolerance: float = configs.BASELINE_TOLERANCE) -> tfma.EvalConfig:
    """Blessing: accuracy >= threshold, and >= baseline - tolerance when a baseline exists. The confusion matrix is
    what the report derives per-class precision and recall from (the class count is only known after ingestion)."""
    accuracy = tfma.MetricConfig(
        class_name=contract.ACCURACY_METRIC_CLASS,  # reported as contract.ACCURACY_METRIC
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


def create_pipeline(options: PipelineOptions) -> tfx.dsl.Pipeline:
    """The pipeline `options` describe, for whichever runner built them (options.py: RunOptions, CompileOptions)."""
    components = []

    data_dir = options.run_parameter("data_dir", absolute(options.data_dir)) if options.data_dir else None
    manifest = options.run_parameter("manifest", absolute(options.manifest)) if options.manifest else None
    fingerprint = InputFingerprint(input_base=data_dir, manifest=manifest,
                                   allow_paths_outside_manifest=options.allow_paths_outside_manifest)
    components.append(fingerprint)
    example_gen = ImageExampleGen(
        input_base=data_dir, manifest=manifest,
        split_ratios=options.run_parameter("split_ratios", ",".join(map(str, options.split_ratios))),
        listing_fingerprint=fingerprint.outputs[contract.FINGERPRINT_KEY].future()[0].value,
        allow_paths_outside_manifest=options.allow_paths_outside_manifest)
    components.append(example_gen)

    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
    components.append(statistics_gen)
    schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"], infer_feature_shape=True)
    components.append(schema_gen)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    components.append(example_validator)

    embedder = ImageEmbedder(examples=example_gen.outputs["examples"], module_handle=options.module,
                             cache_dir=options.embedding_cache, batch_size=configs.EMBEDDING_BATCH_SIZE)
    if options.embed_beam_args:
        # After the pipeline's arguments, so the embedding stage's own runner settings win.
        embedder.with_beam_pipeline_args(with_cluster_workers_image(options.embed_beam_args, options.worker_image))
    components.append(embedder)

    training_config = {"module_handle": options.module, "hyperparameters": dict(options.hyperparameters)}
    tuned = None
    if options.tune:
        tuner = tfx.components.Tuner(
            tuner_fn=configs.TUNER_FN,
            examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
            train_args=tfx.proto.TrainArgs(splits=[contract.TRAIN_SPLIT]),
            eval_args=tfx.proto.EvalArgs(splits=[contract.EVAL_SPLIT]),
            custom_config=dict(training_config, tuner_trials=options.tune_trials),
        )
        components.append(tuner)
        tuned = tuner.outputs["best_hyperparameters"]
    run_hyperparameters = {
        name: options.run_parameter(name, kind(options.hyperparameters.get(name, configs.HYPERPARAMETERS[name])))
        for name, kind in contract.RUN_HYPERPARAMETERS.items()
        # What the Tuner searches is its to choose unless set: a value here would always win over its choice.
        if not (options.tune and name in configs.TUNER_SEARCH_SPACE and name not in options.hyperparameters)}
    # What a retraining continues (warm start, pipelines/models/warm_start.py): the latest blessed model, or what is
    # served. Open-source KFP cannot run TFX resolver executors: there it is what is actually being served.
    if options.resolved_baseline == "latest_blessed":
        resolver = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        ).with_id("latest_blessed_model_resolver")
        components.append(resolver)
        base_model = resolver.outputs["model"]
    else:
        served_before = ServedModelBaseline(serving_model_dir=options.serving_model_dir,
                                            when_nothing_served=EMPTY).with_id("ServedModelToContinue")
        components.append(served_before)
        base_model = served_before.outputs["baseline_model"]
    trainer = HyperparameterTrainer(
        run_fn=configs.RUN_FN,
        base_model=base_model,
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        hyperparameters=tuned,
        train_args=tfx.proto.TrainArgs(splits=[contract.TRAIN_SPLIT]),
        eval_args=tfx.proto.EvalArgs(splits=[contract.EVAL_SPLIT]),
        custom_config=training_config,
        hyperparameter_values=run_hyperparameters,
    ).with_id("Trainer")  # the standard component's id: same task and MLMD names as a stock Trainer
    components.append(trainer)

    if options.resolved_baseline == "latest_blessed":
        baseline_model = base_model
    else:
        # Compared with what is served right before evaluation (the candidate orders it after the Trainer).
        served = ServedModelBaseline(serving_model_dir=options.serving_model_dir,
                                     candidate_model=trainer.outputs["model"],
                                     when_nothing_served=options.WHEN_NOTHING_SERVED)
        components.append(served)
        baseline_model = served.outputs["baseline_model"]

    evaluator = VocabularyCheckedEvaluator(
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        example_splits=[contract.TEST_SPLIT],
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        eval_config=eval_config(options.accuracy_threshold),
        accuracy_threshold=options.run_parameter("accuracy_threshold", float(options.accuracy_threshold)),
    ).with_id("Evaluator")  # the standard component's id: same task and MLMD names as a stock Evaluator
    components.append(evaluator)

    report = ModelReport(
        examples=embedder.outputs[contract.EMBEDDED_EXAMPLES_KEY],
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        split=contract.TEST_SPLIT,
        report_dir=options.report_dir,
    )
    components.append(report)

    validator = ServingValidator(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        model_name=options.model_name,
        serving_release=configs.TF_SERVING_RELEASE,
    )
    components.append(validator)

    pusher = AtomicPusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        infra_blessing=validator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=options.serving_model_dir)),
        custom_config={"rollout": options.rollout, "model_name": options.model_name,
                       "serving_urls": list(options.serving_urls)},
    )
    components.append(pusher)

    step_beam_args = with_cluster_workers_image(options.step_beam_args, options.worker_image)
    return tfx.dsl.Pipeline(
        pipeline_name=options.pipeline_name,
        pipeline_root=options.pipeline_root_uri,
        components=components,
        enable_cache=options.enable_cache,
        metadata_connection_config=options.metadata_connection_config(),
        beam_pipeline_args=with_worker_code_source(step_beam_args, options.worker_image),
    )
