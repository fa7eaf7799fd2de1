"""Checks the stack this project runs on and says what to fix.

Prints Python, TensorFlow, TFX, ML Metadata, TFDV, Beam, the glibc and libstdc++ the process actually loaded, and
whether each imports — in this process and in a child process started the way Beam starts its workers. Exits
non-zero when anything is broken.
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys

FIX_SETUP = "run `make setup` (recreates the private runtime and the patched interpreter in .venv)"

# (label, module, attribute holding the version)
PACKAGES = [
    ("TensorFlow", "tensorflow", "__version__"),
    ("TFX", "tfx.version", "__version__"),
    ("ML Metadata", "ml_metadata", "__version__"),
    ("TFDV", "tensorflow_data_validation", "__version__"),
    ("TFMA", "tensorflow_model_analysis", "__version__"),
    ("TF Transform", "tensorflow_transform", "__version__"),
    ("Apache Beam", "apache_beam", "__version__"),
    ("TF Serving API", "tensorflow_serving.apis.predict_pb2", None),
    ("KFP", "kfp", "__version__"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-subprocess", action="store_true",
                        help="Do not check that a child interpreter (as Beam workers start) imports the stack too.")


def loaded_library(fragment: str) -> str | None:
    """Path of the first shared object mapped into this process whose name contains `fragment`."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1]
                if fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


def libstdcxx_version(path: str | None) -> str:
    if not path:
        return "not loaded"
    real = os.path.realpath(path)
    match = re.search(r"libstdc\+\+\.so\.(\d+\.\d+\.\d+)", real)
    return f"{match.group(1) if match else '?'} ({real})"


def check_package(module: str, attribute: str | None) -> tuple[bool, str]:
    try:
        imported = importlib.import_module(module)
    except Exception as error:  # any import failure is what we report
        return False, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    version = getattr(imported, attribute, "?") if attribute else "ok"
    return True, str(version)


CHILD_CHECK = "from tfx import v1; import ml_metadata, tensorflow_data_validation; print('ok')"


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    problems: list[str] = []
    rows: list[tuple[str, str, str]] = [("Python", "ok", f"{platform.python_version()} ({sys.executable})")]
    for label, module, attribute in PACKAGES:
        ok, detail = check_package(module, attribute)
        rows.append((label, "ok" if ok else "FAIL", detail))
        if not ok:
            problems.append(f"{label} does not import ({detail}): {FIX_SETUP}")

    glibc = platform.libc_ver()[1] or "?"
    libc_path = loaded_library("libc.so.6")
    rows.append(("glibc", "ok", f"{glibc} ({libc_path})"))
    stdcxx = loaded_library("libstdc++.so.6")
    rows.append(("libstdc++", "ok" if stdcxx else "?", libstdcxx_version(stdcxx)))

    if not args.skip_subprocess:
        child = subprocess.run([sys.executable, "-c", CHILD_CHECK], capture_output=True, text=True,
                               env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        ok = child.returncode == 0 and child.stdout.strip().endswith("ok")
        detail = "imports TFX/MLMD/TFDV" if ok else (child.stderr.strip().splitlines() or ["no output"])[-1]
        rows.append(("child process", "ok" if ok else "FAIL", detail))
        if not ok:
            problems.append(f"a child interpreter (as Beam workers start) cannot import the stack: {detail}. "
                            f"{FIX_SETUP}")

    width = max(len(label) for label, _, _ in rows)
    for label, status, detail in rows:
        print(f"{label:<{width}}  {status:<4}  {detail}")
    if problems:
        print("\nProblems:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("\nEverything OK.")
    return 0
