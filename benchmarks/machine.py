"""What a benchmark figure was measured on: CPU model, cores, vector extensions and load, printed by every benchmark so
that a figure can be checked against the machine's peak (e.g. cores x GHz x FLOP/cycle) and its load at the time."""
from __future__ import annotations

import os


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown CPU"


def vector_extensions() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [name for name in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if name in flags]
    return ",".join(found) or "none of avx2/avx512"


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def describe() -> str:
    """One line: CPU model, logical cores (and those this process may use), vector extensions, load average."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"machine: {cpu_model()}, {os.cpu_count()} logical cores ({usable} usable), {vector_extensions()}; "
            f"load average (1/5/15 min) {load_average()}")
