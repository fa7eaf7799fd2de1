"""Embedding-stage throughput vs raw in-process batched inference, per engine (TF, LiteRT), and stage times of full
pipeline runs.

    .venv/bin/python benchmarks/bench_pipeline.py [--images N] [--engines tensorflow litert] [--modes ...]
                                                  [--skip-full-run]

1. Raw, per engine: the shared decode/resize and the image module, batch 32, in this process (module already
   loaded, no I/O): the ceiling for the embedding stage. Measured on --raw-images images just before and just after
   each stage (the stage's ratio uses their mean), and as three back-to-back TF/LiteRT pairs. TF: both in one
   tf.function; LiteRT: decode/resize in TF, then the module's checked conversion (what the stage runs).
2. Stage, per engine: the ImageEmbedder component (Beam DirectRunner, reading and writing TFRecords, no cache) on the
   same images; its time includes worker start-up and module loading (LiteRT: loading the cached conversion).
3. Full runs (digits, cold then warm embedding cache): wall time of every component from ML Metadata.
Prints a table, the ratio stage/raw of the same engine (targets >= 0.8 for TF, >= 0.85 for LiteRT) and LiteRT/TF raw.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def raw_embedder(engine: str):
    """Encoded images (string tensor) -> embeddings (numpy), as the stage computes them with `engine`."""
    import tensorflow as tf

    from image_retrain.image_decoding import preprocess_batch
    from image_retrain.image_module import load_image_module

    module = load_image_module()
    if engine == "litert":
        from image_retrain.image_module.litert_engine import LiteRTImageModule, litert_module_path

        litert_module = LiteRTImageModule(litert_module_path("efficientnet_lite0", module))
        preprocess = tf.function(lambda batch: preprocess_batch(batch, module.input_size),
                                 input_signature=[tf.TensorSpec([None], tf.string)])
        return lambda batch: litert_module(preprocess(batch).numpy())

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def embed(batch):
        return module(preprocess_batch(batch, module.input_size))

    return lambda batch: embed(batch).numpy()


def raw_throughput(embed, images: list[bytes], batch_size: int = 32) -> float:
    import tensorflow as tf

    embed(tf.constant(images[:batch_size]))  # trace + warm up
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        embed(tf.constant(images[start:start + batch_size]))
    return len(images) / (time.perf_counter() - started)


def stage_throughput(data_dir: str, work_dir: str, beam_args: list[str], engine: str) -> dict:
    """Runs ImageExampleGen -> ImageEmbedder (no cache); returns the stage's counts and timings."""
    from tfx import v1 as tfx

    from components.image_embedder.component import ImageEmbedder
    from components.image_example_gen.component import ImageExampleGen

    example_gen = ImageExampleGen(input_base=data_dir)
    embedder = ImageEmbedder(examples=example_gen.outputs["examples"], module_handle="efficientnet_lite0",
                             cache_dir=None, batch_size=32,
                             engine="auto" if engine == "litert" else "tensorflow")
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="bench-embed", pipeline_root=os.path.join(work_dir, "root"),
        components=[example_gen, embedder], beam_pipeline_args=beam_args,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            os.path.join(work_dir, "metadata.db")))
    tfx.orchestration.LocalDagRunner().run(pipeline)
    counts_file = max(glob.glob(os.path.join(work_dir, "root", "ImageEmbedder", "*", "*", "embedding_counts.json")),
                      key=os.path.getmtime)
    return json.load(open(counts_file))


def stage_times(metadata_path: str) -> list[tuple[str, float]]:
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    store = metadata_store.MetadataStore(tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path))
    executions = sorted(store.get_executions(), key=lambda e: e.id)
    types = {t.id: t.name for t in store.get_execution_types()}
    latest_run = executions[-len({e.type_id for e in executions}):]
    return [(types[e.type_id].rsplit(".", 1)[-1],
             (e.last_update_time_since_epoch - e.create_time_since_epoch) / 1000.0) for e in latest_run]


ENGINES = ("tensorflow", "litert")
MODES = {
    "in_memory": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "multi_threading": ["--direct_running_mode=multi_threading", "--direct_num_workers=2"],
    "multi_processing": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1797, help="How many digit images (max 1797).")
    parser.add_argument("--raw-images", type=int, default=320,
                        help="images per raw measurement (raw is measured just before and after each stage)")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--skip-full-run", action="store_true")
    args = parser.parse_args()

    from benchmarks.machine import describe
    from pipelines.demo import write_digits

    work = tempfile.mkdtemp(prefix="bench-pipeline-")
    data_dir = os.path.join(work, "digits")
    write_digits(data_dir)
    files = sorted(glob.glob(os.path.join(data_dir, "*", "*.png")))
    for extra in files[args.images:]:
        os.remove(extra)
    files = files[:args.images]
    print(describe())
    print(f"{len(files)} digit PNGs (32x32) -> EfficientNet-Lite0 at 224x224")

    # The machine is shared: every ratio compares rates measured back to back, so a load change hits both sides.
    images = [open(f, "rb").read() for f in files]
    raw_images = images[:args.raw_images]
    embedders = {engine: raw_embedder(engine) for engine in args.engines}
    if len(embedders) == 2:
        pairs = [(raw_throughput(embedders["tensorflow"], raw_images), raw_throughput(embedders["litert"], raw_images))
                 for _ in range(3)]
        for tf_rate, litert_rate in pairs:
            print(f"raw in-process batched inference (batch 32): tensorflow {tf_rate:6.1f} images/s, litert "
                  f"{litert_rate:6.1f} images/s: {litert_rate / tf_rate:.2f}x")
        print(f"raw LiteRT / raw TF, median of {len(pairs)} back-to-back pairs: "
              f"{statistics.median(b / a for a, b in pairs):.2f}x")
    for engine in args.engines:
        for mode in args.modes:
            raw_before = raw_throughput(embedders[engine], raw_images)
            counts = stage_throughput(data_dir, os.path.join(work, f"{engine}-{mode}"), MODES[mode], engine)
            raw_after = raw_throughput(embedders[engine], raw_images)
            raw = (raw_before + raw_after) / 2
            if counts.get("engine", "tensorflow") != engine:
                print(f"  (the stage ran on {counts.get('engine')}, not {engine}: see the log for why)")
            rate = counts["embeddings_computed"] / counts["seconds"]
            workers = 2 if "multi_processing" in mode else 1  # threads share one module load's wall time
            # Steady state: the stage's wall time less one worker's module load (paid once per worker, not per image).
            steady = counts["embeddings_computed"] / (counts["seconds"] - counts["module_load_ms"] / 1000 / workers)
            label = f"{mode} x2" if mode.startswith("multi") else mode
            print(f"embedding stage, {engine:<10} Beam {label:<20} {rate:7.1f} images/s ({counts['seconds']:.1f} s, "
                  f"of which module load {counts['module_load_ms'] / 1000:.1f} s, embedding "
                  f"{counts['embedding_compute_ms'] / 1000:.1f} s); raw {engine} just before/after "
                  f"{raw_before:.1f}/{raw_after:.1f} images/s: ratio {rate / raw:.2f}, excluding module load "
                  f"{steady:.1f} images/s, ratio {steady / raw:.2f}", flush=True)
    print(describe().split("; ")[1] + " after the stages")

    if not args.skip_full_run:
        from pipelines.local_runner import RunOptions, run_pipeline

        options = RunOptions(data_dir=data_dir, model_name="bench", output_dir=os.path.join(work, "full"),
                             accuracy_threshold=0.5)
        metadata = os.path.join(options.output_dir, "tfx_metadata", options.pipeline_name, "metadata.db")
        for label in ("cold cache", "warm cache"):
            started = time.perf_counter()
            result = run_pipeline(options)
            total = time.perf_counter() - started
            print(f"\nfull run, {label}: {total:.1f} s wall, {result.embeddings_computed} embeddings computed, "
                  f"test accuracy {result.accuracy:.4f}")
            for name, seconds in stage_times(metadata):
                print(f"  {name:<28} {seconds:6.1f} s")
    print(f"\n(work dir: {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
