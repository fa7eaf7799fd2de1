"""Warmup records of an export: TF Serving's `assets.extra/tf_serving_warmup_requests`, with the answers.

Each pushed version carries a handful of PredictionLog records made from real held-out images: Predict on
`serving_default` and Classify on `classify`, one image and a small batch each. A server replays the requests before
the version takes traffic (TF Serving and ours do), so the first client request does not pay for graph optimisation
and kernel set-up. Every record also holds the response the Trainer's in-process model gave: servers ignore it, and
the pipeline's load-and-query check (components/serving_validator) compares what the serving stack answers with it.
The Trainer writes them (pipelines/models/saved_model_export.py), the check reads them.
"""
from __future__ import annotations

import os

import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2

from serving.model_format import (
    CLASSES_OUTPUT,
    CLASSIFY_SIGNATURE,
    EXAMPLE_IMAGE_FEATURE,
    IMAGE_BYTES_INPUT,
    PREDICT_SIGNATURE,
    SCORES_OUTPUT,
    WARMUP_FILE,
)

BATCH = 4  # the batched records' size; the other records hold one image


def image_examples(images: list[bytes]) -> list[bytes]:
    """Serialized tf.Examples holding each image where the classify signature reads it."""
    return [tf.train.Example(features=tf.train.Features(feature={
        EXAMPLE_IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))})).SerializeToString()
        for image in images]


def predict_record(classifier, images: list[bytes]) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = PREDICT_SIGNATURE
    request.inputs[IMAGE_BYTES_INPUT].CopyFrom(tf.make_tensor_proto(images, dtype=tf.string))
    response = predict_pb2.PredictResponse()
    for alias, value in classifier.serve(tf.constant(images)).items():
        response.outputs[alias].CopyFrom(tf.make_tensor_proto(value.numpy()))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request,
                                                                                      response=response))


def classify_record(classifier, images: list[bytes]) -> prediction_log_pb2.PredictionLog:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.signature_name = CLASSIFY_SIGNATURE
    for serialized in image_examples(images):
        request.input.example_list.examples.add().ParseFromString(serialized)
    outputs = classifier.classify(tf.constant(image_examples(images)))
    response = classification_pb2.ClassificationResponse()
    for classes, scores in zip(outputs[CLASSES_OUTPUT].numpy(), outputs[SCORES_OUTPUT].numpy()):
        classification = response.result.classifications.add()
        for label, score in zip(classes, scores):
            classification.classes.add(label=label.decode(), score=float(score))
    return prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=request,
                                                                                         response=response))


def warmup_records(classifier, images: list[bytes]) -> list[prediction_log_pb2.PredictionLog]:
    """Predict and Classify on the first image alone, then on the first BATCH images (fewer if there are fewer)."""
    batches = [images[:1], images[:BATCH]] if len(images) > 1 else [images[:1]]
    return [record(classifier, batch) for batch in batches for record in (predict_record, classify_record)]


def write_warmup(export_dir: str, records: list[prediction_log_pb2.PredictionLog]) -> str:
    path = os.path.join(export_dir, WARMUP_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


def read_warmup(version_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    """The version's warmup records; [] when it has none."""
    path = os.path.join(version_dir, WARMUP_FILE)
    if not tf.io.gfile.exists(path):
        return []
    return [prediction_log_pb2.PredictionLog.FromString(record.numpy()) for record in tf.data.TFRecordDataset(path)]
