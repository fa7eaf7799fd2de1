"""Retrain locally on a cron schedule as new images arrive (APScheduler).

  image-retrain schedule --cron "0 3 * * *" --data-dir DIR [--serving-dir DIR] [--model-name NAME] [--run-now]

Every firing runs the same pipeline as `image-retrain run` (all of its flags apply): it picks up the images present
at that moment, reuses cached embeddings (only new images are embedded), and pushes a new version only if the model
is blessed, so a server watching the serving dir (`image-retrain serve`, tensorflow_model_server) swaps to it.

Cron: 5 fields (crontab: minute hour day-of-month month day-of-week) or 6 fields with seconds first (the Kubeflow
Pipelines / robfig format, so one expression works for both `schedule` and `kfp schedule`). Day-of-week numbers follow
cron (0 or 7 = Sunday); names (MON-FRI) work too; `?` means any. Times are in --timezone (default: local).

Runs never overlap: a run that is still going when the next slot comes makes that slot be skipped (logged), both
within this process and across processes sharing the same --lock-file (default OUTPUT_DIR/schedule.lock). Each run
happens in a fresh child process, so a failed or crashed run is logged and the schedule carries on.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import logging
import multiprocessing
import sys
import threading
import time
from typing import Callable

from pipelines.run_lock import DEFAULT_LOCK_FILE, exclusive_lock

log = logging.getLogger("image_retrain.schedule")

_CRON_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _cron_day(text: str, expression: str, last_weekday: int) -> int:
    if text.lower()[:3] in _CRON_DAY_NAMES and not text.isdigit():
        return _CRON_DAY_NAMES.index(text.lower()[:3])
    if not text.isdigit() or int(text) > last_weekday:
        raise ValueError(f"cron {expression!r}: day of week {text!r} is not 0-{last_weekday} or a day name")
    return int(text)


def _day_of_week_for_apscheduler(field: str, expression: str, last_weekday: int) -> str:
    """Cron counts weekdays from Sunday = 0; APScheduler 3 from Monday = 0. Translating to names avoids the mismatch
    (apscheduler issue 286); ranges are expanded so that SUN-SAT style ranges do not wrap."""
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, slash, step_text = part.partition("/")
        step = int(step_text) if slash and step_text.isdigit() and int(step_text) > 0 else None
        if slash and step is None:
            raise ValueError(f"cron {expression!r}: day-of-week step {step_text!r} must be a positive number")
        if base in ("*", "?"):
            first, last = 0, 6
        elif "-" in base:
            start, end = base.split("-", 1)
            first, last = _cron_day(start, expression, last_weekday), _cron_day(end, expression, last_weekday)
            if last < first:
                raise ValueError(f"cron {expression!r}: day-of-week range {base!r} runs backwards")
        else:
            first = last = _cron_day(base, expression, last_weekday)
        days.update(day % 7 for day in range(first, last + 1, step or 1))
    return ",".join(_CRON_DAY_NAMES[day] for day in sorted(days))


def parse_cron(expression: str, timezone=None, last_weekday: int = 7):
    """An APScheduler CronTrigger from a 5-field crontab or a 6-field (seconds first) expression; APScheduler checks
    every field. `last_weekday`: 7 (crontab: 0 and 7 are Sunday) or 6 (robfig/cron, Kubeflow Pipelines)."""
    from apscheduler.triggers.cron import CronTrigger

    fields = expression.split()
    if len(fields) == 5:
        second, (minute, hour, day, month, day_of_week) = "0", fields
    elif len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
    else:
        raise ValueError(f"cron {expression!r} has {len(fields)} fields; give 5 (minute hour day month weekday) "
                         "or 6 (seconds first)")
    if "?" in second + minute + hour + month:
        raise ValueError(f"cron {expression!r}: '?' is only allowed in day of month or day of week")
    values = dict(second=second, minute=minute, hour=hour, day="*" if day == "?" else day, month=month,
                  day_of_week=_day_of_week_for_apscheduler(day_of_week, expression, last_weekday))
    for name, value in values.items():  # one field at a time, so the error names the field
        try:
            CronTrigger(**{name: value})
        except ValueError as error:
            raise ValueError(f"cron {expression!r}: {name.replace('_', ' ')} {value!r}: {error}") from None
    return CronTrigger(**values, timezone=timezone)


def run_pipeline_in_child(options):
    """`pipelines.local_runner.run_pipeline(options)` in a fresh process: TensorFlow's memory goes away with it, and a
    crash fails this run only."""
    from pipelines import console, local_runner

    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                initializer=console.show_step_results) as pool:
        return pool.submit(local_runner.run_pipeline, options).result()


class ScheduledRetraining:
    """The job the scheduler fires: lock, run, log; never raises (so the schedule survives failures)."""

    def __init__(self, run_once: Callable[[], object], lock_path: str, max_runs: int | None = None,
                 on_limit: Callable[[], None] | None = None, hold: Callable[[], str | None] | None = None):
        self.run_once = run_once
        self.hold = hold  # -> why this slot does not run (e.g. too few new images), or None
        self.lock_path = lock_path
        self.max_runs = max_runs
        self.on_limit = on_limit
        self.attempts = 0
        self.failures = 0
        self.skipped = 0
        self._guard = threading.Lock()

    def __call__(self) -> None:
        with exclusive_lock(self.lock_path) as acquired:
            if not acquired:
                self.skipped += 1
                log.warning("skipped: a previous run still holds %s", self.lock_path)
                return
            reason = self.hold() if self.hold is not None else None
            if reason:
                self.skipped += 1
                log.info("not run: %s", reason)
                return
            with self._guard:
                self.attempts += 1
                attempt = self.attempts
            started = time.monotonic()
            log.info("run %d started", attempt)
            try:
                result = self.run_once()
            except BaseException as error:  # noqa: BLE001 - the schedule must outlive any run, even a crashed child
                self.failures += 1
                log.error("run %d failed after %.0f s: %s: %s", attempt, time.monotonic() - started,
                          type(error).__name__, error, exc_info=not isinstance(error, KeyboardInterrupt))
                if isinstance(error, KeyboardInterrupt):
                    raise
            else:
                log.info("run %d finished in %.0f s: %s", attempt, time.monotonic() - started, _summary(result))
        if self.max_runs is not None and self.attempts >= self.max_runs and self.on_limit is not None:
            log.info("reached --max-runs %d; stopping the schedule", self.max_runs)
            self.on_limit()


def _summary(result) -> str:
    if result is None or not hasattr(result, "blessed"):
        return str(result)
    if result.nothing_changed:
        return "the images and settings are the last run's: nothing trained or pushed"
    pushed = f"pushed version {result.pushed_version}" if result.pushed else "not pushed"
    accuracy = "n/a" if result.accuracy is None else f"{result.accuracy:.4f}"
    return (f"blessed={result.blessed}, {pushed}, accuracy={accuracy}, "
            f"embeddings computed={result.embeddings_computed} cached={result.embeddings_cached}")


def too_few_changes(options, minimum: int) -> Callable[[], str | None]:
    """A `hold` for --when-new: the slot waits while fewer than `minimum` images are new, changed, relabelled or
    deleted since the last run (the first run always goes)."""
    from components.image_example_gen import snapshot
    from image_retrain.paths import absolute

    def hold() -> str | None:
        previous = snapshot.load(options.snapshot_path)
        if previous is None:
            return None
        change = snapshot.changes(previous[1], snapshot.take(absolute(options.data_dir) if options.data_dir else None,
                                                             absolute(options.manifest) if options.manifest else None,
                          allow_paths_outside_manifest=options.allow_paths_outside_manifest))
        if change.count >= minimum:
            return None
        return f"{change.describe()} since the last run, fewer than --when-new {minimum}"

    return hold


def run_schedule(trigger, job: ScheduledRetraining, run_now: bool = False) -> None:
    """Blocks, firing `job` on `trigger` until `job` reaches its run limit (or forever)."""
    from datetime import datetime

    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler(timezone=trigger.timezone)
    job.on_limit = lambda: scheduler.shutdown(wait=False)
    # max_instances=1: APScheduler itself skips a slot while the previous run is going (the flock covers other
    # processes); coalesce: after a pause (laptop asleep) one catch-up run, not one per missed slot.
    kwargs = dict(id="retrain", max_instances=1, coalesce=True, misfire_grace_time=60)
    if run_now:
        kwargs["next_run_time"] = datetime.now(trigger.timezone)
    scheduler.add_job(job, trigger, **kwargs)
    log.info("schedule %s: next run at %s", trigger, kwargs.get("next_run_time") or trigger.get_next_fire_time(
        None, datetime.now(trigger.timezone)))
    scheduler.start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pipelines import local_runner

    parser.add_argument("--cron", required=True,
                        help='When to run: 5-field crontab ("0 3 * * *") or 6 fields with seconds first '
                             '("0 0 3 * * *", as for `kfp schedule`).')
    parser.add_argument("--timezone", help="Time zone of the cron expression (default: the machine's).")
    parser.add_argument("--run-now", action="store_true", help="Also run once right away.")
    parser.add_argument("--max-runs", type=int, help="Stop after this many runs (default: run forever).")
    parser.add_argument("--when-new", type=int, default=0, metavar="N",
                        help="Run a slot only once at least N images are new, changed, relabelled or deleted since "
                             "the last run (default 0: every slot; a run with no change at all stops after the "
                             "listing anyway, unless --force).")
    local_runner.add_arguments(parser)  # --lock-file among them: `run` takes the same lock


def main(args: argparse.Namespace) -> int:
    from pipelines import console, local_runner

    console.configure(args.verbose)  # the runs' child processes inherit its environment switches
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        if args.max_runs is not None and args.max_runs < 1:
            raise ValueError("--max-runs must be at least 1")
        if args.when_new < 0:
            raise ValueError("--when-new must be 0 or more")
        trigger = parse_cron(args.cron, timezone=args.timezone)
        options = local_runner.options_from_args(args)
    except ValueError as error:
        print(f"image-retrain schedule: error: {error}", file=sys.stderr)
        return 2
    job = ScheduledRetraining(
        run_once=lambda: run_pipeline_in_child(options),
        lock_path=args.lock_file or options.path(DEFAULT_LOCK_FILE),
        max_runs=args.max_runs,
        hold=too_few_changes(options, args.when_new) if args.when_new > 0 else None,
    )
    try:
        run_schedule(trigger, job, run_now=args.run_now)
    except (KeyboardInterrupt, SystemExit):
        log.info("schedule stopped")
    log.info("%d run(s), %d failed, %d skipped", job.attempts, job.failures, job.skipped)
    return 0
