"""Quiet console for the CLI (`image-retrain run`, `schedule`, `make run`): start-up chatter hidden unless --verbose.

Called at the CLI boundary before TensorFlow is imported. Python-side noise (warnings, absl/TF/Beam log records below
ERROR, Keras' per-epoch lines) is silenced through their own switches. TensorFlow's C++ start-up lines (oneDNN, CUDA
probes, "All log messages before absl::InitializeLog()") are written before absl's logging is initialised, so
TF_CPP_MIN_LOG_LEVEL does not reach them; `filter_native_stderr` drops exactly those lines from file descriptor 2 in a
separate filter process, so nothing else is lost, not even the last words of a crashing process.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import warnings

from absl import logging as absl_logging

from image_retrain import step_results

# Lines TensorFlow, XLA and LiteRT write to stderr on every start on a CPU-only machine.
NATIVE_NOISE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IW]\d{4} [\d:.]+ +\d+ \S+\] "                              # absl/glog INFO and WARNING lines
    rb"|E\d{4} [\d:.]+ +\d+ cuda_\S+\] failed call to cuInit"        # no GPU on this machine: expected
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.)")

_FILTER = f"""
import re, sys
noise = re.compile({NATIVE_NOISE.pattern!r})
for line in sys.stdin.buffer:
    if not noise.match(line):
        sys.stderr.buffer.write(line)
        sys.stderr.buffer.flush()
"""

_QUIET_LOGGERS = ("tensorflow", "apache_beam", "ml_metadata", "tfx")


def configure(verbose: bool) -> None:
    """Python-side switches; child processes (the model server, scheduled runs) inherit the environment."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose else "2")
    show_step_results()
    if verbose:
        return
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    warnings.simplefilter("ignore")
    absl_logging.set_verbosity(absl_logging.ERROR)  # through absl's flag, which later flag parsing keeps
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def show_step_results() -> None:
    """Each pipeline step's one-line outcome (image_retrain.step_results) on stdout, as the run's own output."""
    if step_results.log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    step_results.log.addHandler(handler)
    step_results.log.setLevel(logging.INFO)
    step_results.log.propagate = False  # shown once, whatever handlers TFX or absl put on the root logger


def quiet_keras() -> None:
    """Keras' fit() lines go to the (silenced) Python logging instead of stdout. Imports Keras: call it just before
    the work that needs TensorFlow anyway."""
    import keras

    keras.config.disable_interactive_logging()


def filter_native_stderr() -> None:
    """Routes this process's (and its children's) file descriptor 2 through a filter process that drops
    NATIVE_NOISE lines. Only for a program's own entry point: it replaces the process-wide stderr."""
    read_end, write_end = os.pipe()
    original = os.dup(2)
    process = subprocess.Popen([sys.executable, "-c", _FILTER], stdin=read_end, stdout=subprocess.DEVNULL,
                               stderr=original, close_fds=True)
    os.close(read_end)
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def restore() -> None:  # at a normal exit: hand fd 2 back and let the filter drain, so the prompt comes last
        sys.stderr.flush()
        os.dup2(original, 2)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:  # a child still holds the pipe; it keeps forwarding on its own
            pass

    atexit.register(restore)
