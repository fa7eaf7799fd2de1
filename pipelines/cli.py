"""`image-retrain`: one entry point, one subcommand per job.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `main(args) -> int`. Those modules keep
TensorFlow/TFX imports inside their functions so that `--help` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from pipelines import console

# name -> (module, one-line help). Nested groups (`kfp`, `module`) are modules with their own sub-subcommands.
SUBCOMMANDS = {
    "run": ("pipelines.local_runner", "Run the pipeline locally: ingest, embed, train, evaluate, push."),
    "serve": ("serving.main", "Serve pushed models over TF Serving's gRPC and REST APIs (its flags)."),
    "predict": ("serving.predict_cli", "Classify image files with a running model server (gRPC or REST)."),
    "batch-predict": ("pipelines.batch_predict.cli",
                      "Classify a folder or manifest of images with a pushed model, as a Beam job (JSONL or CSV)."),
    "schedule": ("pipelines.schedule", "Retrain locally on a cron schedule as new images arrive."),
    "promote": ("pipelines.rollout_cli", "Make a staged rollout's canary the stable version (--if-healthy: if it is)."),
    "rollback": ("pipelines.rollout_cli", "Withdraw the canary, or send the stable label back a version."),
    "rollout": ("pipelines.rollout_cli", "Show a staged rollout, or finish a pending label move."),
    "kfp": ("kubeflow.cli", "Compile the pipeline for Kubeflow Pipelines v2 and schedule recurring runs."),
    "export": ("pipelines.mobile_export",
               "Export a trained classifier for apps: LiteRT (.tflite) or Core ML (.mlpackage)."),
    "module": ("image_retrain.image_module.cli", "Convert and inspect pretrained image feature-vector modules."),
    "doctor": ("pipelines.doctor", "Check the Python/TF/TFX/MLMD/TFDV/Beam stack and the C runtime in use."),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Builds the parser; only `command`'s module is imported (the others just list their help line)."""
    parser = argparse.ArgumentParser(
        prog="image-retrain",
        description="Folders of labelled images in, a served image classifier out (TFX + TF Serving).",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(
            name, help=help_text, description=(module.__doc__ or help_text).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """`argv` None: the `image-retrain` program itself, which may also filter its native stderr (console.py)."""
    is_program = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--verbose" not in argv:  # keep TensorFlow's C++ start-up chatter off the console (set before any TF import)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if is_program and getattr(args, "verbose", True) is False:
        console.filter_native_stderr()
    return int(args._module.main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
