"""Classify image files with a running model server and print a table of the top labels.

    image-retrain predict cat.jpg dog.png --server localhost:8500 --model flowers --top-k 3
    image-retrain predict photos/*.jpg --rest http://localhost:8501
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG/GIF/BMP files")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--server", help="gRPC host:port (default localhost:8500 unless --rest is given)")
    target.add_argument("--rest", help="REST base URL, e.g. http://localhost:8501")
    parser.add_argument("--model", default="default", help="served model name (default 'default')")
    parser.add_argument("--top-k", type=int, default=5, help="labels to show per image (default 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per request (default 32)")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout in seconds")


def format_table(rows: list[tuple[str, str, str]]) -> str:
    header = ("image", "label", "top-k")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(3)]
    lines = [f"{header[0]:<{widths[0]}}  {header[1]:<{widths[1]}}  {header[2]}"]
    lines.append("-" * (sum(widths) + 4))
    for image, label, top in rows:
        lines.append(f"{image:<{widths[0]}}  {label:<{widths[1]}}  {top}")
    return "\n".join(lines)


def main(args) -> int:
    from serving.client import RestClient, ServerError

    if args.top_k < 1:
        print("--top-k must be >= 1", file=sys.stderr)
        return 2
    images = []
    for path in args.images:
        try:
            with open(path, "rb") as f:
                images.append((path, f.read()))
        except OSError as error:
            print(f"Cannot read {path}: {error.strerror}", file=sys.stderr)
            return 2
    if args.rest:
        client = RestClient(args.rest, args.timeout)
    else:
        from serving.grpc_client import GrpcClient  # loads TensorFlow's protos: only for gRPC

        client = GrpcClient(args.server or "localhost:8500", args.timeout)
    rows = []
    try:
        for start in range(0, len(images), args.batch_size):
            chunk = images[start:start + args.batch_size]
            predictions = client.predict_images(args.model, [data for _, data in chunk], top_k=args.top_k)
            for (path, _), prediction in zip(chunk, predictions):
                top = ", ".join(f"{label} {score:.3f}" for label, score in prediction.top_k)
                rows.append((path, prediction.label, top))
    except ServerError as error:
        print(f"Server error {error.code}: {error.message}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"Cannot reach the server: {error}", file=sys.stderr)
        return 1
    print(format_table(rows))
    return 0
