"""What a benchmark figure was measured on: CPU model, cores, vector extensions, load and the machine's practical FP32
peak (benchmarks/bench_peak.py, cached per machine), printed by every benchmark so that each figure can be read as a
fraction of that peak, at the load it was measured under."""
from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys

# The benchmarks import the project: this checkout's, not the one the shared venv's editable install points to.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")
# Native bfloat16 arithmetic: AVX512_BF16's dot products or AMX's tile multiplies (elsewhere oneDNN emulates it).
NATIVE_BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
PEAK_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "image-retrain")


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


def cpu_flags() -> frozenset[str]:
    """The first processor's flags in /proc/cpuinfo; empty where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return frozenset(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return frozenset()


def has_native_bfloat16() -> bool:
    return any(flag in cpu_flags() for flag in NATIVE_BFLOAT16_FLAGS)


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def vector_extensions() -> str:
    flags = cpu_flags()
    if not flags:
        return "unknown"
    return ",".join(name for name in SHOWN_FLAGS if name in flags) or "none of avx2/avx512"


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def peak_cache_path() -> str:
    """One file per CPU model and vector extensions (a VM's model name can be as vague as "Intel Xeon"), usable core
    count and TensorFlow version: what the peak depends on."""
    key = f"{cpu_model()}-{vector_extensions()}-{usable_cores()}cores-tf{importlib.metadata.version('tensorflow')}"
    return os.path.join(PEAK_CACHE_DIR, "peak-" + re.sub(r"[^A-Za-z0-9.]+", "_", key).strip("_") + ".json")


def cached_peak() -> dict | None:
    """The cached figures, None when there are none (or they predate a figure bench_peak.py now measures)."""
    try:
        with open(peak_cache_path(), encoding="utf-8") as f:
            peak = json.load(f)
    except (OSError, ValueError):
        return None
    return peak if {"fp32_gflops", "bandwidth_gbs"} <= set(peak) else None


def write_peak_cache(peak: dict) -> None:
    os.makedirs(os.path.dirname(peak_cache_path()), exist_ok=True)
    with open(peak_cache_path(), "w", encoding="utf-8") as f:
        json.dump(peak, f, indent=2)


def machine_peak() -> dict | None:
    """The cached peak, else one measured now by bench_peak.py in a child process (this process's TensorFlow, if
    any, keeps its own settings); None if that fails."""
    peak = cached_peak()
    if peak is not None:
        return peak
    measured = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                            "bench_peak.py"), "--json"],
                              check=False, capture_output=True, text=True)
    try:
        return json.loads(measured.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return None


def format_peak(peak: dict | None) -> str:
    if peak is None:
        return "FP32 peak unknown (benchmarks/bench_peak.py failed)"
    bf16 = f", bfloat16 {peak['bf16_gflops']:.0f}" if "bf16_gflops" in peak else ""
    cached = "cached" if peak["cached"] else "not cached: busy machine"
    return (f"FP32 peak {peak['fp32_gflops']:.0f} GFLOP/s{bf16} (tf.matmul {peak['side']}x{peak['side']}, best of "
            f"{peak['runs']}), memory {peak['bandwidth_gbs']:.0f} GB/s (tf add); measured {peak['measured']} at load "
            f"{peak['load']}, {cached}")


def describe(peak: dict | None = None) -> str:
    """One line: CPU model, logical cores (and those this process may use), vector extensions; load average; the
    machine's FP32 peak (`peak`, else machine_peak()). Split on "; ": the load is always the second part."""
    return (f"machine: {cpu_model()}, {os.cpu_count()} logical cores ({usable_cores()} usable), "
            f"{vector_extensions()}; load average (1/5/15 min) {load_average()}; "
            f"{format_peak(peak or machine_peak())}")


def fraction_of_peak(gflops: float) -> float | None:
    """`gflops` over the machine's FP32 peak (None when the peak is unknown)."""
    peak = machine_peak()
    return gflops / peak["fp32_gflops"] if peak else None
