"""Local scheduled retraining (`image-retrain schedule`): cron parsing, the run lock, failures that do not stop the
schedule."""
import fcntl
import time

import pytest


@pytest.mark.parametrize("expression, expected_day_of_week", [
    ("0 3 * * 0", "sun"),            # cron: 0 = Sunday (APScheduler 3 alone would read Monday)
    ("0 3 * * 7", "sun"),
    ("0 3 * * 1-5", "mon,tue,wed,thu,fri"),
    ("0 0 3 * * SUN-SAT", "sun,mon,tue,wed,thu,fri,sat"),
    ("0 0 3 ? * */2", "sun,tue,thu,sat"),
    ("0 0 3 * * *", "*"),
])
def test_cron_accepts_5_and_6_fields_with_cron_weekdays(expression, expected_day_of_week):
    from datetime import datetime

    from pipelines.schedule import parse_cron

    trigger = parse_cron(expression, timezone="UTC")
    fields = {f.name: str(f) for f in trigger.fields}
    assert fields["day_of_week"] == expected_day_of_week
    assert fields["hour"] == "3" and fields["second"] == "0"
    if expected_day_of_week == "sun":  # 2025-01-01 is a Wednesday
        assert trigger.get_next_fire_time(None, datetime(2025, 1, 1, tzinfo=trigger.timezone)).day == 5


@pytest.mark.parametrize("expression, message", [
    ("3 * * *", "4 fields"),
    ("0 0 25 * * *", "hour"),
    ("0 3 * * 8", "day of week"),
    ("0 3 * * 5-1", "backwards"),
])
def test_cron_errors_are_clear(expression, message):
    from pipelines.schedule import parse_cron

    with pytest.raises(ValueError, match=message):
        parse_cron(expression)


def test_a_failed_run_is_logged_and_the_schedule_goes_on(tmp_path, caplog):
    from pipelines.schedule import ScheduledRetraining, parse_cron, run_schedule

    calls = []

    def run_once():
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("corrupt data set")
        return "ok"

    job = ScheduledRetraining(run_once, lock_path=str(tmp_path / "schedule.lock"), max_runs=2)
    started = time.monotonic()
    with caplog.at_level("INFO", logger="image_retrain.schedule"):
        run_schedule(parse_cron("* * * * * *"), job, run_now=True)  # every second; returns after 2 runs
    assert (job.attempts, job.failures, len(calls)) == (2, 1, 2)
    assert time.monotonic() - started < 10
    assert "run 1 failed" in caplog.text and "RuntimeError: corrupt data set" in caplog.text
    assert "run 2 finished" in caplog.text


def test_overlapping_runs_are_prevented_by_the_lock(tmp_path, caplog):
    from pipelines.schedule import ScheduledRetraining, exclusive_lock

    lock_path = str(tmp_path / "schedule.lock")
    job = ScheduledRetraining(lambda: pytest.fail("must not run while another run holds the lock"), lock_path)
    with open(lock_path, "a+") as other_holder:  # another scheduler process, as far as flock is concerned
        fcntl.flock(other_holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with caplog.at_level("WARNING", logger="image_retrain.schedule"):
            job()
        fcntl.flock(other_holder.fileno(), fcntl.LOCK_UN)
    assert (job.attempts, job.skipped) == (0, 1)
    assert "still holds" in caplog.text
    with exclusive_lock(lock_path) as acquired:
        assert acquired


def test_schedule_cli_rejects_a_bad_cron_before_running(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["schedule", "--cron", "every day", "--data-dir", str(tmp_path)]) == 2
    assert "cron 'every day'" in capsys.readouterr().err
