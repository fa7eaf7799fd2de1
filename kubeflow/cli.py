"""Kubeflow Pipelines v2: compile the pipeline and run it or schedule it with kfp.Client.

  image-retrain kfp compile --pipeline-root minio://mlpipeline/v2/artifacts --image REGISTRY/image-retrain:TAG \
                            --pvc image-retrain-models:/models --serving-dir /models --data-dir /models/images \
                            [every `image-retrain run` pipeline option: --epochs, --split-ratios, --beam-arg, ...]
  image-retrain kfp schedule --cron "0 0 3 * * *" [--host URL] [--experiment NAME] [--package pipeline.yaml]
                             [--param KEY=VALUE ...]
  image-retrain kfp run [--host URL] [--experiment NAME] [--package pipeline.yaml] [--param KEY=VALUE ...]

KFP's cron has 6 fields, seconds first (robfig/cron): "0 0 3 * * *" is every day at 03:00:00. Recurring runs are
created with max_concurrency=1 and no catch-up, so a slow run is never overlapped and missed slots are not backfilled.
`--param` sets one of the package's run parameters (its root input parameters: data_dir or manifest, split_ratios,
epochs, ..., accuracy_threshold); the others keep their compiled values (the package's defaults).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys

from pipelines.options import bool_flag
from pipelines.schedule import parse_cron

DEFAULT_EXPERIMENT = "image-retrain"

_CRON_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def validate_kfp_cron(expression: str) -> str:
    """Checks a KFP (robfig/cron) expression locally, so a typo fails here and not in the KFP scheduler. The fields
    are checked by the one cron parser (pipelines.schedule.parse_cron, APScheduler); the descriptors, the 6-field
    rule and robfig's weekdays 0-6 are KFP's own."""
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
    parse_cron(expression, last_weekday=6)
    return expression


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="kfp_action", metavar="ACTION", required=True)

    compile_ = actions.add_parser("compile", help="Compile the pipeline to a KFP v2 package (pipeline.yaml).")
    add_compile_arguments(compile_)

    check = actions.add_parser("check-imports", help="Import every module, executor and artifact type a compiled "
                                                     "package names (run it inside the image you built).")
    check.add_argument("package", nargs="?", default="pipeline.yaml", help="Package (default: %(default)s).")

    def client_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--host", help="KFP API endpoint (default: kfp.Client's in-cluster/kubeconfig discovery).")
        sub.add_argument("--namespace", help="Kubeflow profile namespace (multi-user deployments only).")
        sub.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="Experiment name (created if missing; "
                                                                          "default: %(default)s).")
        sub.add_argument("--package", default="pipeline.yaml", help="Package from `kfp compile` "
                                                                    "(default: %(default)s).")
        sub.add_argument("--pipeline-root", help="Override the package's defaultPipelineRoot.")
        sub.add_argument("--service-account", help="Kubernetes service account for the run's pods.")
        sub.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                         help="A run parameter of the package (repeatable); the rest keep their compiled values.")

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


def add_compile_arguments(parser: argparse.ArgumentParser) -> None:
    from kubeflow.kubeflow_v2_runner import (
        DEFAULT_IMAGE,
        KFP_DEFAULT_PIPELINE_ROOT,
        OBJECT_STORE_SCHEMES,
        CompileOptions,
    )
    from pipelines import options as pipeline_options

    pipeline_options.add_arguments(parser, CompileOptions)
    parser.add_argument("--image", default=DEFAULT_IMAGE,
                        help="Component image built from the repository's Dockerfile (default: %(default)s).")
    parser.add_argument("--pipeline-root", required=True,
                        help=f"Object storage for every artifact ({', '.join(OBJECT_STORE_SCHEMES)}), the package's "
                             f"defaultPipelineRoot; the KFP deployment's default is {KFP_DEFAULT_PIPELINE_ROOT}.")
    parser.add_argument("--pvc", action="append", default=[], metavar="CLAIM:PATH",
                        help="Mount a PersistentVolumeClaim into every step (repeatable), e.g. "
                             "image-retrain-models:/models, the claim of kubeflow/manifests.")
    parser.add_argument("--enable-cache", action="store_true", help="Let KFP reuse cached step results.")
    parser.add_argument("--output", default="pipeline.yaml", help="Package path (default: %(default)s).")
    parser.add_argument("--allow-local-pipeline-root", action="store_true",
                        help="Accept a local --pipeline-root: only for emulating the backend on one machine; the "
                             "KFP launcher refuses it.")


def compile_options_from_args(args: argparse.Namespace):
    from kubeflow.kubeflow_v2_runner import CompileOptions, PvcMount
    from pipelines import options as pipeline_options

    return CompileOptions(
        **pipeline_options.from_args(args),
        image=args.image,
        pipeline_root=args.pipeline_root,
        pvcs=[PvcMount.parse(text) for text in args.pvc],
        enable_cache=args.enable_cache,
        output=args.output,
        allow_local_pipeline_root=args.allow_local_pipeline_root,
    )


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError("JSON has no NaN or infinity")
    return number


# A root input parameter's type -> how its --param value is read (the JSON type the API server wants).
_PARAMETER_PARSERS = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": _finite_float, "BOOLEAN": bool_flag, "STRING": str}


def run_arguments(texts: list[str], root_parameters: dict) -> dict:
    """`--param KEY=VALUE` flags as kfp.Client's run arguments, typed by the package's root input parameters
    (`{name: {"parameterType": ...}}`): the API server refuses names the pipeline does not declare and a value of
    another JSON type, a string for a number say (apiserver/template/v2_template.go validatePipelineJobInputs)."""
    arguments = {}
    for text in texts:
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--param expects KEY=VALUE, got {text!r}")
        if name not in root_parameters:
            raise ValueError(f"--param {name}: the package has no such run parameter; it has "
                             f"{', '.join(sorted(root_parameters)) or 'none'}")
        kind = root_parameters[name].get("parameterType")
        parse = _PARAMETER_PARSERS.get(kind)
        if parse is None:
            raise ValueError(f"--param {name}: a {kind} parameter cannot be given on the command line")
        try:
            arguments[name] = parse(value)
        except (ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"--param {name}={value!r}: the package declares it {kind}") from None
    return arguments


def _package_root_parameters(path: str) -> dict:
    from google.protobuf import json_format
    from kfp.client import client as kfp_client

    spec = kfp_client._extract_pipeline_yaml(path).pipeline_spec  # what create_run / create_recurring_run send
    return json_format.MessageToDict(spec).get("root", {}).get("inputDefinitions", {}).get("parameters", {})


def _uploaded_root_parameters(client, pipeline_id: str, version_id: str) -> dict:
    spec = client.get_pipeline_version(pipeline_id, version_id).pipeline_spec or {}
    spec = spec.get("pipeline_spec", spec)  # a version uploaded with a platform spec keeps both documents
    return spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})


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
    from kfp_server_api.exceptions import ApiException

    try:
        if args.kfp_action == "compile":
            from kubeflow.kubeflow_v2_runner import compile_pipeline

            path = compile_pipeline(compile_options_from_args(args))
            print(path)
            return 0
        if args.kfp_action == "check-imports":
            from kubeflow.kubeflow_v2_runner import check_imports

            for path in check_imports(args.package):
                print(path)
            return 0
        if args.kfp_action == "schedule":
            validate_schedule_args(args)
            arguments = None if args.pipeline_id else run_arguments(args.param, _package_root_parameters(args.package))
            client = _client(args)
            if arguments is None:
                arguments = run_arguments(args.param, _uploaded_root_parameters(client, args.pipeline_id,
                                                                                 args.version_id))
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
                params=arguments,
                pipeline_root=args.pipeline_root,
                service_account=args.service_account,
            )
            print(recurring.recurring_run_id)
            return 0
        _check_package(args.package)
        arguments = run_arguments(args.param, _package_root_parameters(args.package))
        client = _client(args)
        with contextlib.redirect_stdout(sys.stderr):
            result = client.create_run_from_pipeline_package(
                args.package, arguments=arguments, run_name=args.run_name, experiment_name=args.experiment,
                namespace=args.namespace, pipeline_root=args.pipeline_root, service_account=args.service_account)
        print(result.run_id)
        return 0
    except ValueError as error:
        print(f"image-retrain kfp {args.kfp_action}: error: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        print(f"image-retrain kfp {args.kfp_action}: error: {error}", file=sys.stderr)
        return 1
    except ApiException as error:
        print(f"image-retrain kfp {args.kfp_action}: the KFP API server refused the request "
              f"({error.status} {error.reason}): {_api_message(error)}", file=sys.stderr)
        return 1


def _api_message(error) -> str:
    try:
        body = json.loads(error.body)
    except (TypeError, ValueError):
        return str(error.body)
    return body.get("error_message") or body.get("message") or str(body)
