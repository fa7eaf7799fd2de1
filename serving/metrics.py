"""TF Serving's request metrics in Prometheus text format (names as util/prometheus_exporter.cc writes them).

Written here rather than by prometheus_client, whose writer names every counter `<name>_total` (TF Serving's lack the
suffix); label values are escaped as the text format requires, so no value can end a line or a label. Requests for
models the server does not serve are counted under one model_name, UNKNOWN_MODEL: names from URLs cannot grow the
series without bound.
"""
from __future__ import annotations

import bisect
import collections
import threading

# Exponential(10, 1.8, 33) microsecond buckets, as /tensorflow/serving/request_latency uses.
LATENCY_BUCKETS_US = [10 * 1.8 ** i for i in range(33)]
# No served model can have this name (serving/config.py: names start with a letter or digit).
UNKNOWN_MODEL = "_unknown_"
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class _Histogram:
    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    def __init__(self):
        self._lock = threading.Lock()
        self.request_count: dict[tuple, int] = collections.defaultdict(int)
        self.request_latency: dict[tuple, _Histogram] = {}
        self.request_log_count: dict[tuple, int] = collections.defaultdict(int)
        self.request_log_dropped: dict[str, int] = collections.defaultdict(int)
        self.batch_sizes = _Histogram(BATCH_SIZE_BUCKETS)
        self.queuing_latency = _Histogram(LATENCY_BUCKETS_US)

    def observe_request(self, model_name: str, api: str, entrypoint: str, status: str, version: str,
                        seconds: float) -> None:
        """`version`: the version that answered ("" if none was resolved), a label TF Serving's metrics lack."""
        with self._lock:
            self.request_count[(model_name, status, version)] += 1
            if status == "OK":
                key = (model_name, api, entrypoint, version)
                histogram = self.request_latency.get(key)
                if histogram is None:
                    histogram = self.request_latency[key] = _Histogram(LATENCY_BUCKETS_US)
                histogram.observe(seconds * 1e6)

    def record_request_log(self, model_name: str, status_code: str) -> None:
        """A record offered to the request log: written (OK), dropped for a full queue (RESOURCE_EXHAUSTED), ..."""
        with self._lock:
            self.request_log_count[(model_name, status_code)] += 1
            if status_code == "RESOURCE_EXHAUSTED":
                self.request_log_dropped[model_name] += 1

    def record_batch(self, padded: int, queuing_us: float) -> None:
        with self._lock:
            self.batch_sizes.observe(padded)
            self.queuing_latency.observe(queuing_us)

    def prometheus_text(self) -> str:
        lines = []
        with self._lock:
            lines.append("# TYPE :tensorflow:serving:request_count counter")
            # TF Serving's labels first, in its order; `version` is appended, so scrapers that know only the others
            # still find theirs.
            for (model, status, version), value in sorted(self.request_count.items()):
                labels = _labels(model_name=model, status=status, version=version)
                lines.append(f":tensorflow:serving:request_count{{{labels}}} {value}")
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, entrypoint, version), hist in sorted(self.request_latency.items()):
                labels = _labels(model_name=model, API=api, entrypoint=entrypoint, version=version)
                lines.extend(_histogram_lines(":tensorflow:serving:request_latency", labels, hist))
            lines.append("# TYPE :tensorflow:serving:request_log_count counter")
            for (model, status_code), value in sorted(self.request_log_count.items()):
                labels = _labels(model_name=model, status_code=status_code)
                lines.append(f":tensorflow:serving:request_log_count{{{labels}}} {value}")
            lines.append("# TYPE :tensorflow:serving:request_log_dropped_count counter")  # ours: the queue was full
            for model, value in sorted(self.request_log_dropped.items()):
                lines.append(f":tensorflow:serving:request_log_dropped_count{{{_labels(model_name=model)}}} {value}")
            lines.append("# TYPE :tensorflow:serving:batching_session:processed_batch_size histogram")
            lines.extend(_histogram_lines(":tensorflow:serving:batching_session:processed_batch_size", "",
                                          self.batch_sizes))
            lines.append("# TYPE :tensorflow:serving:batching_session:queuing_latency histogram")
            lines.extend(_histogram_lines(":tensorflow:serving:batching_session:queuing_latency", "",
                                          self.queuing_latency))
        return "\n".join(lines) + "\n"


def _labels(**values: str) -> str:
    """name="value",... with the text format's escapes in each value: backslash, double quote, line feed."""
    return ",".join(f'{name}="{_escaped(value)}"' for name, value in values.items())


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _histogram_lines(name: str, labels: str, hist: _Histogram) -> list[str]:
    prefix = labels + "," if labels else ""
    lines, cumulative = [], 0
    for bound, count in zip(hist.bounds + [float("inf")], hist.counts):
        cumulative += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{{prefix}le="{le}"}} {cumulative}')
    suffix = "{" + labels + "}" if labels else ""
    lines.append(f"{name}_sum{suffix} {hist.total:g}")
    lines.append(f"{name}_count{suffix} {hist.count}")
    return lines
