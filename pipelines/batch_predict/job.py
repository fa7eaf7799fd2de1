"""A batch prediction from start to end: check the request, list the images, run the Beam job, publish the files.

    list (here, ingestion's rules) -> Reshuffle -> BatchElements -> PredictImagesFn (one model load per worker)
        -> predictions, rejects (the listing's and the DoFn's) -> JSON-lines shards -> writer.publish

Everything that can be wrong with the request (the output's extension, the model directory, the version or label,
the input) fails before Beam starts. Beam runs where `beam_args` say, by the pipeline's rule (pipelines/beam_args.py):
the DirectRunner in this process by default (configs.LOCAL_BEAM_ARGS), and a distributed runner's workers run the
project's image unless the arguments name their environment. Remote workers must reach the images, the model and
the output's folder (a bucket, or a shared volume).
"""
from __future__ import annotations

import dataclasses
import json
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import configs
from pipelines.batch_predict import model_version, rows, writer
from pipelines.batch_predict.listing import list_images
from pipelines.batch_predict.model_version import ModelVersion
from pipelines.batch_predict.predict_fn import PredictImagesFn
from pipelines.beam_args import with_cluster_workers_image

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a batch prediction did: which version it ran, where its files are, how many images each holds."""
    model: ModelVersion
    output: str
    rejects: str
    predicted: int
    rejected: int


def run(model_dir: str, output: str, *, data_dir: str | None = None, manifest: str | None = None,
        version: int | None = None, label: str | None = None, top_k: int = configs.BATCH_PREDICT_TOP_K,
        batch_size: int = configs.BATCH_PREDICT_BATCH_SIZE, beam_args: list[str] | None = None,
        allow_paths_outside_manifest: bool = False) -> Outcome:
    """Predicts every listed image with the chosen version of the model at `model_dir`; ValueError for a bad
    request."""
    writer.output_format(output)
    if top_k < 1 or batch_size < 1:
        raise ValueError(f"--top-k and --batch-size must be at least 1, got {top_k} and {batch_size}")
    model = model_version.resolve(model_dir, version, label)
    listing = list_images(data_dir, manifest, allow_paths_outside_manifest)
    labelled = data_dir is not None or any(candidate.label for candidate in listing.candidates)
    log.info("batch-predict: %d images listed (%d rejected at listing) for %s version %d", len(listing.candidates),
             len(listing.rejects), model.name, model.version)
    parts = writer.parts_folder(output)
    options = PipelineOptions(with_cluster_workers_image(
        list(configs.LOCAL_BEAM_ARGS) if beam_args is None else list(beam_args), configs.IMAGE))
    try:
        with beam.Pipeline(options=options) as pipeline:
            predicted, rejected = (
                pipeline
                | "List" >> beam.Create(listing.candidates)
                | "Spread" >> beam.Reshuffle()
                | "Batch" >> beam.BatchElements(min_batch_size=batch_size, max_batch_size=batch_size)
                | "Predict" >> beam.ParDo(PredictImagesFn(model, top_k, labelled)).with_outputs(
                    PredictImagesFn.REJECTED, main="predicted"))
            listing_rejects = pipeline | "ListingRejects" >> beam.Create(
                [rows.reject_row(reject.path, reject.label, labelled, reject.reason) for reject in listing.rejects])
            _ = (predicted
                 | "PredictionsAsJson" >> beam.Map(json.dumps)
                 | "WritePredictions" >> beam.io.WriteToText(writer.part_prefix(parts, writer.PREDICTIONS_PART)))
            _ = ((rejected, listing_rejects)
                 | "AllRejects" >> beam.Flatten()
                 | "RejectsAsJson" >> beam.Map(json.dumps)
                 | "WriteRejects" >> beam.io.WriteToText(writer.part_prefix(parts, writer.REJECTS_PART)))
        counts = writer.publish(parts, output, rows.prediction_columns(top_k, labelled), rows.reject_columns(labelled))
    finally:
        writer.remove(parts)
    return Outcome(model, output, writer.rejects_path(output), *counts)
