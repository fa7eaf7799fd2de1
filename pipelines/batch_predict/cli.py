"""`image-retrain batch-predict`: classify a folder or manifest of images with a pushed model, as a Beam job.

  image-retrain batch-predict --model-dir SERVING_DIR/MODEL [--version N | --label stable]
      (--data-dir DIR | --manifest CSV) --output preds.jsonl|preds.csv [--top-k 3] [--beam-arg ARG ...]

The model is the version TF Serving would answer with: the newest complete one under the model's base path, or
`--version N`, or the version a staged rollout's `--label` (stable, canary) names. Each image's raw bytes go through
the model's serving signature, so the answers are the served ones. Images: a folder per class (the folder names are
the given labels) or a CSV manifest with `path` and optionally `label`, listed by ingestion's rules. One row per
image: path, given_label (when the input has labels), label_1, score_1, ..., model, version; .jsonl or .csv by the
output's extension. Files that are not usable images go to `<output stem>.rejects.<ext>` with the reason, and the job
goes on. Both files appear whole or not at all. Beam runs in this process by default; `--beam-arg` (repeatable)
passes pipeline options, e.g. `--beam-arg=--runner=PortableRunner --beam-arg=--job_endpoint=HOST:8099`.
"""
from __future__ import annotations

import argparse
import sys

from pipelines import configs
from pipelines.options import add_image_source_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", required=True, metavar="SERVING_DIR/MODEL",
                        help="The model's base path: the folder holding its numeric version folders.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--version", type=int, help="This version (default: the newest complete one).")
    which.add_argument("--label", help="The version this staged-rollout label names (stable, canary).")
    add_image_source_arguments(parser, "path[,label]")
    parser.add_argument("--output", required=True, help="preds.jsonl or preds.csv (rejects beside it).")
    parser.add_argument("--top-k", type=int, default=configs.BATCH_PREDICT_TOP_K,
                        help="Labels per image (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=configs.BATCH_PREDICT_BATCH_SIZE,
                        help="Images per model call at most (default: %(default)s).")
    parser.add_argument("--beam-arg", action="append", dest="beam_args", default=None, metavar="ARG",
                        help="Beam pipeline argument; repeatable (default: "
                             f"{' '.join(configs.LOCAL_BEAM_ARGS)}, the DirectRunner in this process).")
    parser.add_argument("--verbose", action="store_true", help="Also show TensorFlow/Beam warnings and start-up "
                                                               "lines.")


def main(args: argparse.Namespace) -> int:
    from pipelines import console

    console.configure(args.verbose)
    from pipelines.batch_predict import job

    try:
        outcome = job.run(args.model_dir, args.output, data_dir=args.data_dir, manifest=args.manifest,
                          version=args.version, label=args.label, top_k=args.top_k, batch_size=args.batch_size,
                          beam_args=args.beam_args, allow_paths_outside_manifest=args.allow_paths_outside_manifest)
    except ValueError as error:
        print(f"image-retrain batch-predict: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a version that does not load: the job stopped, and wrote nothing
        print(f"image-retrain batch-predict: the job failed, no output written: {error}", file=sys.stderr)
        return 1
    print(f"{outcome.output}: {outcome.predicted} images predicted by {outcome.model.name} version "
          f"{outcome.model.version}; {outcome.rejected} rejected ({outcome.rejects})")
    return 0
