"""Move a staged rollout's labels: `image-retrain promote`, `image-retrain rollback`, `image-retrain rollout`.

  image-retrain promote  --model-base-path /srv/models/flowers --server http://localhost:8501 [--if-healthy]
  image-retrain rollback --model-base-path /srv/models/flowers --server http://localhost:8501 [--to VERSION]
  image-retrain rollout status|advance --model-base-path /srv/models/flowers [--server URL]
  image-retrain rollout init --model-base-path gs://BUCKET/models/flowers --model-name flowers

The rollout is the model config file a `--rollout canary` push keeps beside the versions (image_retrain/rollout.py);
servers started with `--model_config_file=<base path>/model_server.config --model_config_file_poll_wait_seconds=N`
follow it. promote: the canary becomes stable (`--if-healthy`: only if its error rate and latency on the servers'
own metrics are no worse than stable's). rollback: a canary out is withdrawn; else stable goes back to the version
before it (or `--to`). A label moves onto a version only once every `--server` (REST base URL; repeatable) reports it
AVAILABLE, as TF Serving requires; `rollout advance` finishes a move a push without `--serving-url` left pending;
`rollout init` writes the plain config a server needs before the first canary push (the manifests' init container does
this on a volume).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.rsplit(" ", 1)[-1]  # one module for the three commands: pipelines/cli.py SUBCOMMANDS
    if command == "rollout":
        parser.add_argument("action", choices=("status", "advance", "init"),
                            help="status: labels and versions; advance: write the pending step once it may be; init: "
                                 "the plain config a server needs before any rollout, unless one exists.")
        parser.add_argument("--model-name", help="init: the served model's name.")
    parser.add_argument("--model-base-path", required=True, help="The model's base path (SERVING_DIR/MODEL_NAME).")
    parser.add_argument("--server", action="append", default=[], metavar="URL",
                        help="REST base URL of a server that follows the rollout (repeatable): label moves wait for "
                             "it to load the version; --if-healthy reads its metrics.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds to wait for a version to load.")
    if command == "promote":
        parser.add_argument("--if-healthy", action="store_true",
                            help="Refuse, with the reason, unless the canary's error rate and median latency on the "
                                 "servers' metrics are no worse than stable's.")
        parser.add_argument("--min-requests", type=int, default=20, help="Canary requests needed to judge it.")
        parser.add_argument("--max-error-rate-increase", type=float, default=0.01,
                            help="How much higher the canary's error rate may be (absolute; default %(default)s).")
        parser.add_argument("--max-latency-ratio", type=float, default=1.5,
                            help="How many times stable's median latency the canary's may be (default %(default)s).")
    if command == "rollback":
        parser.add_argument("--to", type=int, help="The version to roll back to (default: the one before stable).")


def main(args: argparse.Namespace) -> int:
    from image_retrain import canary_health, rollout
    from serving import versions
    from serving.model_format import ROLLOUT_CONFIG_FILE, ROLLOUT_NEXT_FILE

    base_path = args.model_base_path.rstrip("/")
    wait = rollout.servers_waiter(args.server, args.timeout) if args.server else None
    try:
        if args.command == "rollout" and args.action == "init":
            if not args.model_name:
                raise ValueError("rollout init needs --model-name")
            rollout.write_plain(args.model_name, base_path)
            print(f"{base_path}/{ROLLOUT_CONFIG_FILE}: start servers with --model_config_file pointing at it")
            return 0
        current = rollout.read(base_path)
        if current is None:
            raise ValueError(f"no rollout under {base_path}: push with --rollout canary first")
        if args.command == "rollout":
            if args.action == "advance":
                if wait is None:
                    raise ValueError("rollout advance needs --server: a label moves only onto a loaded version")
                current = rollout.advance(base_path, wait)
            pending = rollout.read(base_path, ROLLOUT_NEXT_FILE)
            print(current.describe() + (f"; next: {pending.describe()}" if pending else ""))
            return 0
        if args.command == "promote":
            if args.if_healthy:
                if not args.server:
                    raise ValueError("--if-healthy reads the servers' metrics: give --server")
                reason = canary_health.verdict(canary_health.scrape(args.server, current.model_name), current.stable,
                                               current.canary, min_requests=args.min_requests,
                                               max_error_rate_increase=args.max_error_rate_increase,
                                               max_latency_ratio=args.max_latency_ratio)
                if reason:
                    print(f"image-retrain promote: refused: {reason}", file=sys.stderr)
                    return 1
            steps = rollout.plan_promote(current)
        else:
            previous = args.to if args.to is not None else max(
                (v for v in versions.version_directories(base_path) or {} if v < (current.stable or 0)), default=None)
            steps = rollout.plan_rollback(current, previous)
        print(rollout.apply(steps, wait).describe())
        return 0
    except rollout.Pending as pending:
        print(f"image-retrain {args.command}: {pending}", file=sys.stderr)
        return 3
    except (ValueError, TimeoutError, OSError) as error:
        print(f"image-retrain {args.command}: {error}", file=sys.stderr)
        return 2
