"""The pipeline's options, one definition for every runner: `image-retrain run`, `schedule` and `kfp compile`.

A setting that changes what the pipeline does lives here, with its flag, so it exists for every runner or for none;
`create_pipeline()` builds the component list from a PipelineOptions alone. Runners subclass it with only what is
physically theirs (the local output folder; the KFP image, pipeline root and volumes) and answer the few questions
below the fields: where artifacts go, the defaults that differ between them.
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import ClassVar

from image_retrain.paths import absolute, join
from pipelines import configs

BASELINES = ("latest_blessed", "served_model")
ROLLOUTS = ("direct", "canary")


@dataclasses.dataclass
class PipelineOptions:
    data_dir: str | None = None               # folder per class (a path, a bucket URI, or a path on a volume)
    manifest: str | None = None               # CSV path,label[,split]
    allow_paths_outside_manifest: bool = False  # manifest rows may name files outside the manifest's folder
    module: str = configs.MODULE_HANDLE
    model_name: str = configs.MODEL_NAME
    pipeline_name: str | None = None          # default: image-retrain-<model-name>
    serving_dir: str | None = None            # TF Serving models root: the model goes to SERVING_DIR/MODEL_NAME/<ver>
    embedding_cache_dir: str | None = None
    accuracy_threshold: float = configs.EVAL_ACCURACY_THRESHOLD
    baseline: str | None = None               # None: the runner's DEFAULT_BASELINE
    split_ratios: tuple[int, int, int] = configs.SPLIT_RATIOS
    hyperparameters: dict = dataclasses.field(default_factory=dict)
    tune: bool = False                        # TFX Tuner (KerasTuner) search before the Trainer
    tune_trials: int = configs.TUNER_TRIALS
    beam_args: list[str] | None = None        # None: configs.LOCAL_BEAM_ARGS
    embed_beam_args: list[str] = dataclasses.field(default_factory=list)  # the embedding stage only, after beam_args
    enable_cache: bool = False                # let the orchestrator reuse a step's earlier result
    rollout: str = "direct"                   # direct: the push serves everyone; canary: under the canary label
    serving_urls: list[str] = dataclasses.field(default_factory=list)  # REST URLs of the servers of a rollout

    DEFAULT_BASELINE: ClassVar[str] = "latest_blessed"
    # What ServedModelBaseline publishes on a first run (components/served_model_baseline): nothing, unless the
    # orchestrator records every declared output anyway (KFP).
    WHEN_NOTHING_SERVED: ClassVar[str] = "no_baseline"

    def __post_init__(self):
        # One pipeline (and so one MLMD context and baseline history) per served model; KFP names take no '_'.
        self.pipeline_name = self.pipeline_name or f"{configs.PIPELINE_NAME}-{self.model_name}".replace("_", "-")

    def validate(self) -> None:
        if bool(self.data_dir) == bool(self.manifest):
            raise ValueError("give exactly one of --data-dir (folder per class) or --manifest (CSV path,label)")
        if len(self.split_ratios) != 3 or min(self.split_ratios) < 1:
            raise ValueError(f"--split-ratios needs three positive integers (train,eval,test), got {self.split_ratios}")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise ValueError(f"--baseline must be one of {', '.join(BASELINES)}, got {self.baseline!r}")
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"--rollout must be one of {', '.join(ROLLOUTS)}, got {self.rollout!r}")
        if self.tune_trials < 1:
            raise ValueError(f"--tune-trials must be at least 1, got {self.tune_trials}")
        unknown = set(self.hyperparameters) - set(configs.HYPERPARAMETERS)
        if unknown:
            raise ValueError(f"unknown hyperparameters {sorted(unknown)}; known: {sorted(configs.HYPERPARAMETERS)}")
        views = self.hyperparameters.get("test_time_views", configs.HYPERPARAMETERS["test_time_views"])
        if views not in configs.TEST_TIME_VIEWS:
            raise ValueError(f"--test-time-views must be one of {configs.TEST_TIME_VIEWS}, got {views}")

    # -- resolved settings, the same for every runner
    @property
    def resolved_baseline(self) -> str:
        return self.baseline or self.DEFAULT_BASELINE

    @property
    def step_beam_args(self) -> list[str]:
        """Every Beam step's arguments (the embedding stage's own come after them)."""
        return list(configs.LOCAL_BEAM_ARGS) if self.beam_args is None else list(self.beam_args)

    @property
    def serving_model_dir(self) -> str:
        """The TF Serving model base path: SERVING_DIR/MODEL_NAME."""
        return join(absolute(self.serving_dir), self.model_name)

    @property
    def embedding_cache(self) -> str:
        return absolute(self.embedding_cache_dir or self.default_embedding_cache_dir)

    # -- what each runner decides
    @property
    def pipeline_root_uri(self) -> str:
        """Where every component's artifacts go."""
        raise NotImplementedError

    @property
    def default_embedding_cache_dir(self) -> str:
        raise NotImplementedError

    @property
    def worker_image(self) -> str:
        """The image remote Beam workers (and Kubeflow steps) run."""
        return configs.IMAGE

    @property
    def report_dir(self) -> str | None:
        """A folder the run's report is also copied to (a local one), or None."""
        return None

    def metadata_connection_config(self):
        """ML Metadata's connection, or None where the orchestrator provides it."""
        return None

    def run_parameter(self, name: str, value: int | float | str):
        """A setting a run may change (create_pipeline names them): the value itself here; a runner whose runs take
        values at submit time returns a TFX RuntimeParameter `name` defaulting to it (CompileOptions)."""
        return value


def bool_flag(text: str) -> bool:
    """An argparse type for true/false flags (1/0, yes/no)."""
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_image_source_arguments(parser: argparse.ArgumentParser, manifest_columns: str) -> None:
    """--data-dir or --manifest (one required), and the manifest's path confinement: where a job's images come from,
    for the pipeline and for batch prediction alike."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="Images in folder-per-class layout: DIR/<label>/<image files>.")
    source.add_argument("--manifest", help=f"CSV with columns {manifest_columns}; relative paths are resolved "
                                           "against the CSV's folder.")
    parser.add_argument("--allow-paths-outside-manifest", action="store_true",
                        help="Read manifest rows naming files outside the manifest's folder (absolute paths, ../, "
                             "other buckets); by default they are rejected.")


def add_arguments(parser: argparse.ArgumentParser, options_class: type[PipelineOptions]) -> None:
    """Every PipelineOptions field as a flag; defaults that differ between runners come from `options_class`."""
    add_image_source_arguments(parser, "path,label[,split]")
    parser.add_argument("--module", default=configs.MODULE_HANDLE,
                        help="Image feature-vector module: TF Hub URL, SavedModel dir, or builtin name "
                             "(default: %(default)s).")
    parser.add_argument("--model-name", default=configs.MODEL_NAME, help="Served model name (default: %(default)s).")
    parser.add_argument("--pipeline-name", help="Pipeline name, also its ML Metadata context "
                                                "(default: image-retrain-<model-name>).")
    parser.add_argument("--serving-dir", help="TF Serving models root; the model goes to SERVING_DIR/MODEL_NAME/"
                                              "<version>.")
    parser.add_argument("--embedding-cache-dir", help="Embedding cache shared by all runs.")
    parser.add_argument("--accuracy-threshold", type=float, default=configs.EVAL_ACCURACY_THRESHOLD,
                        help="Bless only if test accuracy >= this (and >= baseline - %s; default: %%(default)s)."
                             % configs.BASELINE_TOLERANCE)
    parser.add_argument("--baseline", choices=BASELINES, default=None,
                        help="Compare against the latest blessed model in ML Metadata, or the version currently "
                             f"under the serving dir (default: {options_class.DEFAULT_BASELINE}).")
    parser.add_argument("--split-ratios", default=",".join(map(str, configs.SPLIT_RATIOS)),
                        help="train,eval,test hash-bucket ratios (default: %(default)s).")
    hyper = parser.add_argument_group("head hyperparameters")
    for name, default in configs.HYPERPARAMETERS.items():
        flag = "--" + name.replace("_", "-")
        kind = bool_flag if isinstance(default, bool) else type(default)
        hyper.add_argument(flag, type=kind, default=None, metavar="BOOL" if kind is bool_flag else None,
                           help=f"(default: {default})")
    parser.add_argument("--tune", action="store_true",
                        help="Search the hyperparameters not given explicitly with TFX's Tuner (KerasTuner random "
                             "search, each trial a training run scored on the eval split) and train with the best.")
    parser.add_argument("--tune-trials", type=int, default=configs.TUNER_TRIALS,
                        help="Tuner budget in trials (default: %(default)s).")
    parser.add_argument("--beam-arg", action="append", dest="beam_args", default=None, metavar="ARG",
                        help="Beam pipeline argument for every Beam step, the embedding stage included; repeatable "
                             f"(default: {' '.join(configs.LOCAL_BEAM_ARGS)}).")
    parser.add_argument("--rollout", choices=ROLLOUTS, default="direct",
                        help="direct (default): a blessed push is what every client gets, as a plain TF Serving base "
                             "path serves it; canary: it goes out under the `canary` label of the model config file "
                             "beside the versions, stable traffic stays, and `image-retrain promote` moves it on.")
    parser.add_argument("--serving-url", action="append", dest="serving_urls", default=[], metavar="URL",
                        help="REST base URL of a server following the rollout (repeatable): the push waits for it to "
                             "load the new version before moving a label onto it (without one the move is left for "
                             "`image-retrain rollout advance`).")
    parser.add_argument("--embed-beam-arg", action="append", dest="embed_beam_args", default=[], metavar="ARG",
                        help="Beam pipeline argument for the embedding stage only, applied after --beam-arg (the "
                             "later value wins); repeatable. Sends the heavy stage to a cluster (e.g. "
                             "--embed-beam-arg=--runner=PortableRunner) while the light steps stay where they are.")


def _split_ratios(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--split-ratios needs three positive integers (train,eval,test), got {text!r}") from None


def from_args(args: argparse.Namespace) -> dict:
    """The PipelineOptions fields given on a command line built by `add_arguments`."""
    return dict(
        data_dir=args.data_dir, manifest=args.manifest, allow_paths_outside_manifest=args.allow_paths_outside_manifest,
        module=args.module, model_name=args.model_name,
        pipeline_name=args.pipeline_name, serving_dir=args.serving_dir,
        embedding_cache_dir=args.embedding_cache_dir, accuracy_threshold=args.accuracy_threshold,
        baseline=args.baseline, split_ratios=_split_ratios(args.split_ratios),
        hyperparameters={name: getattr(args, name) for name in configs.HYPERPARAMETERS
                         if getattr(args, name, None) is not None},
        tune=args.tune, tune_trials=args.tune_trials,
        beam_args=args.beam_args, embed_beam_args=args.embed_beam_args,
        rollout=args.rollout, serving_urls=args.serving_urls,
    )
