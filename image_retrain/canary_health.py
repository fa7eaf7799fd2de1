"""Is the canary as healthy as the stable version? Read from the servers' own Prometheus metrics.

The model server counts every request by model, status and the version that answered
(`:tensorflow:serving:request_count{model_name,status,version}`) and times the successful ones
(`:tensorflow:serving:request_latency{...,version}`, µs buckets). Summed over every server given, the canary's
error rate and median latency are set against the stable version's.
"""
from __future__ import annotations

import dataclasses
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

METRICS_PATH = "/monitoring/prometheus/metrics"  # TF Serving's default prometheus_config path
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"


@dataclasses.dataclass
class VersionHealth:
    requests: int = 0
    errors: int = 0
    latency_buckets: dict[float, float] = dataclasses.field(default_factory=dict)  # upper bound µs -> cumulative

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def median_latency_us(self) -> float | None:
        """The upper bound of the bucket holding the median (what a histogram can tell)."""
        if not self.latency_buckets:
            return None
        total = max(self.latency_buckets.values())
        return next((bound for bound, count in sorted(self.latency_buckets.items()) if count >= total / 2), None) \
            if total else None


def scrape(server_urls: list[str], model_name: str, metrics_path: str = METRICS_PATH,
           timeout_s: float = 10.0) -> dict[int, VersionHealth]:
    """{version: its health} summed over the servers."""
    health: dict[int, VersionHealth] = {}
    for url in server_urls:
        with urllib.request.urlopen(url.rstrip("/") + metrics_path, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("model_name") != model_name or not labels.get("version", "").isdigit():
                    continue
                version = health.setdefault(int(labels["version"]), VersionHealth())
                if family.name == REQUEST_COUNT:
                    version.requests += int(sample.value)
                    version.errors += int(sample.value) if labels.get("status") != "OK" else 0
                elif family.name == REQUEST_LATENCY and sample.name.endswith("_bucket"):
                    bound = float(labels["le"])
                    version.latency_buckets[bound] = version.latency_buckets.get(bound, 0.0) + sample.value
    return health


def verdict(health: dict[int, VersionHealth], stable: int, canary: int, *, min_requests: int = 20,
            max_error_rate_increase: float = 0.01, max_latency_ratio: float = 1.5) -> str | None:
    """None when the canary may be promoted, else why not (one line, with the numbers)."""
    stable_health, canary_health = health.get(stable, VersionHealth()), health.get(canary, VersionHealth())
    if canary_health.requests < min_requests:
        return (f"only {canary_health.requests} request(s) reached canary version {canary} (at least {min_requests} "
                "needed to judge it)")
    if canary_health.error_rate > stable_health.error_rate + max_error_rate_increase:
        return (f"canary version {canary} failed {canary_health.errors} of {canary_health.requests} requests "
                f"({canary_health.error_rate:.1%}) against {stable_health.error_rate:.1%} for stable version "
                f"{stable} (allowed: +{max_error_rate_increase:.1%})")
    canary_latency, stable_latency = canary_health.median_latency_us, stable_health.median_latency_us
    if canary_latency and stable_latency and canary_latency > max_latency_ratio * stable_latency:
        return (f"canary version {canary} answers in {canary_latency / 1000:.1f} ms (median) against "
                f"{stable_latency / 1000:.1f} ms for stable version {stable} (allowed: x{max_latency_ratio})")
    return None
