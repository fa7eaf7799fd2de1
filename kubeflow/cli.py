"""Kubeflow Pipelines v2: compile the pipeline and run it or schedule it with kfp.Client.

  image-retrain kfp compile --pipeline-root gs://BUCKET/root --serving-dir /models --pvc image-retrain-models:/models
                            --data-root gs://BUCKET/images [--image IMAGE] [--beam-args="--runner=DataflowRunner ..."]
  image-retrain kfp schedule --cron "0 0 3 * * *" [--host URL] [--experiment NAME] [--package pipeline.yaml]
  image-retrain kfp run [--host URL] [--experiment NAME] [--package pipeline.yaml]

KFP's cron has 6 fields, seconds first (robfig/cron): "0 0 3 * * *" is every day at 03:00:00. Recurring runs are
created with max_concurrency=1 and no catch-up, so a slow run is never overlapped and missed slots are not backfilled.
"""
from __future__ import annotations

import argparse
import contextlib
import re
import shlex
import sys

DEFAULT_EXPERIMENT = "image-retrain"

# robfig/cron (KFP's scheduler): seconds minutes hours day-of-month month day-of-week.
_CRON_FIELDS = (
    ("seconds", 0, 59, None),
    ("minutes", 0, 59, None),
    ("hours", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    ("day of week", 0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")),
)
_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def _cron_value(text: str, low: int, high: int, names, field: str, expression: str) -> int:
    if names and text.upper() in names:
        return names.index(text.upper()) + low
    if not text.isdigit():
        raise ValueError(f"cron {expression!r}: {field} value {text!r} is not a number"
                         + (f" or one of {', '.join(names)}" if names else ""))
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"cron {expression!r}: {field} value {value} is outside {low}-{high}")
    return value


def validate_kfp_cron(expression: str) -> str:
    """Checks a KFP (robfig/cron) expression locally, so a typo fails here and not in the KFP scheduler."""
    expression = " ".join(expression.split())
    if expression.startswith("@"):
        if expression in _CRON_DESCRIPTORS:
            return expression
        if expression.startswith("@every "):
            if _GO_DURATION.match(expression[len("@every "):]):
                return expression
            raise ValueError(f"cron {expression!r}: @every needs a Go duration such as 1h30m")
        raise ValueError(f"cron {expression!r}: unknown descriptor; use one of {', '.join(_CRON_DESCRIPTORS)} "
                         "or @every DURATION")
    fields = expression.split(" ")
    if len(fields) == 5:
        raise ValueError(f"cron {expression!r} has 5 fields; Kubeflow Pipelines needs 6 with seconds first, "
                         f"e.g. {'0 ' + expression!r}")
    if len(fields) != 6:
        raise ValueError(f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines needs 6: "
                         "seconds minutes hours day-of-month month day-of-week")
    for text, (field, low, high, names) in zip(fields, _CRON_FIELDS):
        for part in text.split(","):
            base, slash, step = part.partition("/")
            if slash and (not step.isdigit() or int(step) == 0):
                raise ValueError(f"cron {expression!r}: {field} step {step!r} must be a positive number")
            if base in ("*", "?"):
                if base == "?" and field not in ("day of month", "day of week"):
                    raise ValueError(f"cron {expression!r}: '?' is only allowed in day of month or day of week")
                continue
            start, dash, end = base.partition("-")
            first = _cron_value(start, low, high, names, field, expression)
            if dash:
                last = _cron_value(end, low, high, names, field, expression)
                if last < first:
                    raise ValueError(f"cron {expression!r}: {field} range {base!r} runs backwards")
    return expression


def _beam_args(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [arg for value in values for arg in shlex.split(value)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="kfp_action", metavar="ACTION", required=True)

    compile_ = actions.add_parser("compile", help="Compile the pipeline to a KFP v2 package (pipeline.yaml).")
    compile_.add_argument("--image", help="Component image built from the repository's Dockerfile "
                                          "(default: image-retrain:latest).")
    compile_.add_argument("--pipeline-root", required=True,
                          help="Object-storage URI for every artifact (e.g. gs://BUCKET/image-retrain); also the "
                               "package's defaultPipelineRoot.")
    compile_.add_argument("--serving-dir", required=True,
                          help="TF Serving models root: a path on a --pvc mount (the claim TF Serving reads) or a "
                               "bucket URI. The model goes to SERVING_DIR/MODEL_NAME/<version>.")
    compile_.add_argument("--model-name", help="Served model name (default: the pipeline configs' MODEL_NAME).")
    source = compile_.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-root", help="Images in folder-per-class layout (bucket URI or a --pvc path).")
    source.add_argument("--manifest", help="CSV manifest (path,label[,split]) (bucket URI or a --pvc path).")
    compile_.add_argument("--module", help="Image feature-vector module handle (default: the configs' builtin).")
    compile_.add_argument("--embedding-cache-dir", help="Embedding cache shared by runs "
                                                        "(default: PIPELINE_ROOT/embedding_cache).")
    compile_.add_argument("--accuracy-threshold", type=float, help="Bless only if test accuracy >= this.")
    compile_.add_argument("--beam-args", action="append", metavar="ARGS",
                          help="Beam pipeline arguments for every Beam step, the embedding stage included, as one "
                               "shell-quoted string (repeatable), e.g. --beam-args=\"--runner=DataflowRunner "
                               "--project=P --region=R --temp_location=gs://B/tmp\". Distributed runners get "
                               "the component image for their workers unless you set it. Default: DirectRunner, "
                               "one process per core of the step's pod.")
    compile_.add_argument("--pvc", action="append", default=[], metavar="CLAIM:PATH",
                          help="Mount a PersistentVolumeClaim into every step (repeatable), e.g. "
                               "image-retrain-models:/models, the claim of kubeflow/manifests.")
    compile_.add_argument("--pipeline-name", help="KFP pipeline name (default: image-retrain-<model-name>).")
    compile_.add_argument("--enable-cache", action="store_true", help="Let KFP reuse cached step results.")
    compile_.add_argument("--output", default="pipeline.yaml", help="Package path (default: %(default)s).")

    def client_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", help="KFP API endpoint (default: kfp.Client's in-cluster/kubeconfig discovery).")
        sub.add_argument("--namespace", help="Kubeflow profile namespace (multi-user deployments only).")
        sub.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="Experiment name (created if missing; "
                                                                          "default: %(default)s).")
        sub.add_argument("--package", default="pipeline.yaml", help="Package from `kfp compile` "
                                                                    "(default: %(default)s).")
        sub.add_argument("--pipeline-root", help="Override the package's defaultPipelineRoot.")
        sub.add_argument("--service-account", help="Kubernetes service account for the run's pods.")

    schedule = actions.add_parser("schedule", help="Create a recurring run (cron) and print its id.")
    schedule.add_argument("--cron", required=True, help='6-field cron, seconds first, e.g. "0 0 3 * * *".')
    schedule.add_argument("--job-name", default="image-retrain-scheduled", help="Recurring run name.")
    client_flags(schedule)
    schedule.add_argument("--pipeline-id", help="Use an uploaded pipeline instead of --package "
                                                "(needs --version-id).")
    schedule.add_argument("--version-id", help="Uploaded pipeline version id.")

    run = actions.add_parser("run", help="Start one run of the package now and print its id.")
    run.add_argument("--run-name", help="Run name (default: KFP's).")
    client_flags(run)


def compile_options_from_args(args: argparse.Namespace):
    from kubeflow.kubeflow_v2_runner import DEFAULT_BEAM_ARGS, DEFAULT_IMAGE, CompileOptions, PvcMount

    return CompileOptions(
        image=args.image or DEFAULT_IMAGE,
        pipeline_root=args.pipeline_root,
        serving_dir=args.serving_dir,
        model_name=args.model_name,
        data_root=args.data_root,
        manifest=args.manifest,
        module=args.module,
        embedding_cache_dir=args.embedding_cache_dir,
        accuracy_threshold=args.accuracy_threshold,
        beam_args=_beam_args(args.beam_args) or list(DEFAULT_BEAM_ARGS),
        pvcs=[PvcMount.parse(text) for text in args.pvc],
        pipeline_name=args.pipeline_name,
        enable_cache=args.enable_cache,
        output=args.output,
    )


def validate_schedule_args(args: argparse.Namespace) -> None:
    """Everything `kfp schedule` can check before talking to a KFP endpoint."""
    args.cron = validate_kfp_cron(args.cron)
    if args.pipeline_id or args.version_id:
        if not (args.pipeline_id and args.version_id):
            raise ValueError("--pipeline-id and --version-id go together")
    else:
        _check_package(args.package)


def _check_package(path: str) -> None:
    from kfp.client import client as kfp_client

    try:
        kfp_client._extract_pipeline_yaml(path)  # what create_recurring_run / create_run parse the package with
    except FileNotFoundError:
        raise ValueError(f"package {path!r} does not exist; run `image-retrain kfp compile` first") from None


def _experiment_id(client, name: str, namespace: str | None) -> str:
    """The experiment's id; kfp's create_experiment gets an existing one by name or creates it."""
    with contextlib.redirect_stdout(sys.stderr):  # it prints a UI link; stdout carries only the id we print
        return client.create_experiment(name=name, namespace=namespace).experiment_id


def _client(args: argparse.Namespace):
    import kfp

    with contextlib.redirect_stdout(sys.stderr):
        return kfp.Client(host=args.host)


def main(args: argparse.Namespace) -> int:
    try:
        if args.kfp_action == "compile":
            from kubeflow.kubeflow_v2_runner import compile_pipeline

            path = compile_pipeline(compile_options_from_args(args))
            print(path)
            return 0
        if args.kfp_action == "schedule":
            validate_schedule_args(args)
            client = _client(args)
            experiment_id = _experiment_id(client, args.experiment, args.namespace)
            recurring = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=args.job_name,
                cron_expression=args.cron,
                max_concurrency=1,
                no_catchup=True,
                pipeline_package_path=None if args.pipeline_id else args.package,
                pipeline_id=args.pipeline_id,
                version_id=args.version_id,
                pipeline_root=args.pipeline_root,
                service_account=args.service_account,
            )
            print(recurring.recurring_run_id)
            return 0
        _check_package(args.package)
        client = _client(args)
        with contextlib.redirect_stdout(sys.stderr):
            result = client.create_run_from_pipeline_package(
                args.package, arguments={}, run_name=args.run_name, experiment_name=args.experiment,
                namespace=args.namespace, pipeline_root=args.pipeline_root, service_account=args.service_account)
        print(result.run_id)
        return 0
    except ValueError as error:
        print(f"image-retrain kfp {args.kfp_action}: error: {error}", file=sys.stderr)
        return 2
