"""The DoFn of a batch prediction: image files in, the served model's answers out, in batches, at bounded memory.

Each worker loads the pushed SavedModel once (`setup`) and calls its serving signature (serving/model_format.py:
`serving_default`, `image_bytes` -> `scores`, `classes`) on the raw file bytes, as TF Serving would: the model's own
graph decodes and resizes, so the answers are the served ones, ranked as the clients rank them (serving/client.py
`top_k_pairs`). Before that, what ingestion checks without decoding (components/image_example_gen/validation.py):
the file is a regular file of at most 256 MiB (a FIFO is never opened), its content a supported format, its headers
claiming at most MAX_IMAGE_PIXELS pixels (image_retrain/image_limits.py). A file failing a check, or that the model
cannot decode, goes to the rejects with its reason; the job goes on.

Memory: a call holds at most MAX_BATCH_BYTES of encoded files and MAX_BATCH_PIXELS claimed pixels (the decoder
allocates what the headers claim); one image over either runs alone. So a worker's peak is about
MAX_BATCH_BYTES + its largest file + 16 bytes x max(MAX_BATCH_PIXELS, its largest image) on top of the model,
however hostile the files (16 bytes a pixel: the uint8 decode, its float32 copy and the resize, as the model server's
memory budget counts them).
"""
from __future__ import annotations

import apache_beam as beam
import tensorflow as tf

from components.image_example_gen import validation as v
from components.image_example_gen.sources import ImageCandidate
from pipelines.batch_predict import rows
from pipelines.batch_predict.model_version import ModelVersion
from serving.client import as_text, top_k_pairs
from serving.model_format import CLASSES_OUTPUT, IMAGE_BYTES_INPUT, PREDICT_SIGNATURE, SCORES_OUTPUT

MAX_BATCH_BYTES = 64 * 1024 * 1024
MAX_BATCH_PIXELS = 25_000_000  # ~400 MB decoded at 16 bytes a pixel


class PredictImagesFn(beam.DoFn):
    """A list of ImageCandidates (from BatchElements) -> prediction rows; rejects under the REJECTED tag."""
    REJECTED = "rejected"

    def __init__(self, model: ModelVersion, top_k: int, labelled: bool, max_batch_bytes: int = MAX_BATCH_BYTES,
                 max_batch_pixels: int = MAX_BATCH_PIXELS):
        self._model = model
        self._top_k = top_k
        self._labelled = labelled
        self._max_batch_bytes = max_batch_bytes
        self._max_batch_pixels = max_batch_pixels
        self._limits = v.ValidationLimits()

    def setup(self):
        self._saved_model = tf.saved_model.load(self._model.path)  # kept: the signature needs its variables alive
        self._signature = self._saved_model.signatures[PREDICT_SIGNATURE]

    def process(self, candidates: list[ImageCandidate]):
        pending: list[tuple[ImageCandidate, bytes]] = []
        pending_bytes = pending_pixels = 0
        for candidate in candidates:
            try:
                data = v.read_file_bytes(candidate.location, self._limits)
                pixels = v.check_header(data, self._limits).pixels
            except v.ImageRejected as rejected:
                yield self._reject(candidate, str(rejected))
                continue
            if pending and (pending_bytes + len(data) > self._max_batch_bytes
                            or pending_pixels + pixels > self._max_batch_pixels):
                yield from self._predict(pending)
                pending, pending_bytes, pending_pixels = [], 0, 0
            pending.append((candidate, data))
            pending_bytes += len(data)
            pending_pixels += pixels
        if pending:
            yield from self._predict(pending)

    def _predict(self, items: list[tuple[ImageCandidate, bytes]]):
        try:
            outputs = self._signature(**{IMAGE_BYTES_INPUT: tf.constant([data for _, data in items])})
        except v.decode_errors() as error:
            if len(items) == 1:
                yield self._reject(items[0][0], f"{v.UNDECODABLE}: the model cannot decode it: "
                                                f"{v.clean_tf_message(error.message)}")
                return
            for item in items:  # one bad image fails the whole call: one by one, only it is rejected
                yield from self._predict([item])
            return
        scores, classes = outputs[SCORES_OUTPUT].numpy(), outputs[CLASSES_OUTPUT].numpy()
        for (candidate, _), image_scores, image_classes in zip(items, scores, classes):
            ranked = top_k_pairs(image_scores, [as_text(label) for label in image_classes], self._top_k)
            yield rows.prediction_row(candidate.path, candidate.label, self._labelled, ranked, self._model.name,
                                      self._model.version)

    def _reject(self, candidate: ImageCandidate, reason: str):
        return beam.pvalue.TaggedOutput(self.REJECTED,
                                        rows.reject_row(candidate.path, candidate.label, self._labelled, reason))
