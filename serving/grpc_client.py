"""The gRPC client of a TF Serving-compatible server, on the official tensorflow_serving.apis stubs.

    GrpcClient("localhost:8500").predict_images("flowers", [jpeg_bytes, ...])

answers what serving/client.py's RestClient answers (one ImagePrediction per image) for models with the image
classifier format (serving/model_format.py), plus the Classify API on tf.Examples.
"""
from __future__ import annotations

import grpc
import tensorflow as tf
from tensorflow.core.example import feature_pb2
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    input_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.client import ImagePrediction, ServerError, as_text, top_k_pairs
from serving.model_format import (
    CLASSES_OUTPUT,
    CLASSIFY_SIGNATURE,
    EXAMPLE_IMAGE_FEATURE,
    IMAGE_BYTES_INPUT,
    LABEL_OUTPUT,
    PREDICT_SIGNATURE,
    SCORES_OUTPUT,
)


class GrpcClient:
    def __init__(self, target: str, timeout_s: float = 30.0):
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout_s = timeout_s

    def close(self):
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ServerError(error.code().name, error.details()) from None

    def predict(self, model: str, inputs: dict, signature_name: str = "", version: int | None = None,
                output_filter=()):
        """inputs: {alias: TensorProto or array-like}; returns the PredictResponse."""
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = version
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(value if hasattr(value, "dtype") and hasattr(value, "tensor_shape")
                                           else tf.make_tensor_proto(value))
        request.output_filter.extend(output_filter)
        return self._call(self.prediction.Predict, request)

    def predict_images(self, model: str, images: list[bytes], top_k: int = 5) -> list[ImagePrediction]:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = PREDICT_SIGNATURE
        request.inputs[IMAGE_BYTES_INPUT].CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=list(images),
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(
                size=len(images))])))
        response = self._call(self.prediction.Predict, request)
        scores = response.outputs[SCORES_OUTPUT]
        num_classes = scores.tensor_shape.dim[1].size
        flat_scores = list(scores.float_val)
        flat_classes = [as_text(c) for c in response.outputs[CLASSES_OUTPUT].string_val] \
            if CLASSES_OUTPUT in response.outputs else None
        labels = [as_text(v) for v in response.outputs[LABEL_OUTPUT].string_val] \
            if LABEL_OUTPUT in response.outputs else None
        results = []
        for i in range(len(images)):
            row = flat_scores[i * num_classes:(i + 1) * num_classes]
            classes = flat_classes[i * num_classes:(i + 1) * num_classes] if flat_classes else None
            top = top_k_pairs(row, classes, top_k)
            results.append(ImagePrediction(labels[i] if labels else top[0][0], top))
        return results

    def classify(self, model: str, request_input, signature_name: str = CLASSIFY_SIGNATURE):
        """Classify API on a tensorflow.serving.Input (tf.Examples); returns the ClassificationResponse."""
        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        request.input.CopyFrom(request_input)
        return self._call(self.prediction.Classify, request)

    def classify_images(self, model: str, images: list[bytes], signature_name: str = CLASSIFY_SIGNATURE):
        """Classify API with tf.Examples carrying the image under EXAMPLE_IMAGE_FEATURE; returns
        [[(label, score), ...], ...]."""
        request_input = input_pb2.Input()
        for image in images:
            request_input.example_list.examples.add().features.feature[EXAMPLE_IMAGE_FEATURE].CopyFrom(
                feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[image])))
        response = self.classify(model, request_input, signature_name)
        return [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]

    def status(self, model: str):
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return self._call(self.models.GetModelStatus, request)
