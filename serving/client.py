"""Clients for a TF Serving-compatible server: gRPC (official tensorflow_serving.apis stubs) and REST (plain HTTP).

    GrpcClient("localhost:8500").predict_images("flowers", [jpeg_bytes, ...])
    RestClient("http://localhost:8501").predict_images("flowers", [jpeg_bytes, ...])

both return one ImagePrediction per image: the top-1 label and the top-k (label, score) pairs, for models with the
image classifier contract (serving_default: image_bytes -> scores, classes, label).

GrpcClient imports grpc and the TensorFlow protos when used, not at the top: RestClient, and with it
`image-retrain predict --rest`, then starts without loading TensorFlow.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request

IMAGE_INPUT = "image_bytes"


@dataclasses.dataclass
class ImagePrediction:
    label: str
    top_k: list[tuple[str, float]]


def _top_k(scores, classes, k: int) -> list[tuple[str, float]]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return [(classes[i] if classes is not None else str(i), float(scores[i])) for i in order]


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ServerError(RuntimeError):
    """The server answered with an error; `code` is the gRPC code name or the HTTP status."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


class GrpcClient:
    def __init__(self, target: str, timeout_s: float = 30.0):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)
        self.timeout_s = timeout_s

    def close(self):
        self.channel.close()

    def _call(self, method, request):
        import grpc
        try:
            return method(request, timeout=self.timeout_s)
        except grpc.RpcError as error:
            raise ServerError(error.code().name, error.details()) from None

    def predict(self, model: str, inputs: dict, signature_name: str = "", version: int | None = None,
                output_filter=()):
        """inputs: {alias: TensorProto or array-like}; returns the PredictResponse."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

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
        from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = "serving_default"
        request.inputs[IMAGE_INPUT].CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_STRING, string_val=list(images),
            tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(
                size=len(images))])))
        response = self._call(self.prediction.Predict, request)
        scores = response.outputs["scores"]
        num_classes = scores.tensor_shape.dim[1].size
        flat_scores = list(scores.float_val)
        flat_classes = [_text(c) for c in response.outputs["classes"].string_val] if "classes" in response.outputs \
            else None
        labels = [_text(v) for v in response.outputs["label"].string_val] if "label" in response.outputs else None
        results = []
        for i in range(len(images)):
            row = flat_scores[i * num_classes:(i + 1) * num_classes]
            classes = flat_classes[i * num_classes:(i + 1) * num_classes] if flat_classes else None
            top = _top_k(row, classes, top_k)
            results.append(ImagePrediction(labels[i] if labels else top[0][0], top))
        return results

    def classify_images(self, model: str, images: list[bytes], signature_name: str = "classify"):
        """Classify API with tf.Examples carrying `image_raw`; returns [[(label, score), ...], ...]."""
        from tensorflow.core.example import example_pb2, feature_pb2
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = signature_name
        for image in images:
            example = example_pb2.Example()
            example.features.feature["image_raw"].CopyFrom(
                feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[image])))
            request.input.example_list.examples.append(example)
        response = self._call(self.prediction.Classify, request)
        return [[(c.label, c.score) for c in item.classes] for item in response.result.classifications]

    def status(self, model: str):
        from tensorflow_serving.apis import get_model_status_pb2
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return self._call(self.models.GetModelStatus, request)


class RestClient:
    def __init__(self, base_url: str, timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        if "://" not in self.base_url:
            self.base_url = "http://" + self.base_url
        self.timeout_s = timeout_s

    def request(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                message = json.loads(text).get("error", text)
            except ValueError:
                message = text
            raise ServerError(error.code, message) from None

    def predict(self, model: str, body: dict, version: int | None = None) -> dict:
        suffix = f"/versions/{version}" if version is not None else ""
        return self.request(f"/v1/models/{model}{suffix}:predict", body)

    def predict_images(self, model: str, images: list[bytes], top_k: int = 5) -> list[ImagePrediction]:
        body = {"signature_name": "serving_default",
                "instances": [{IMAGE_INPUT: {"b64": base64.b64encode(image).decode("ascii")}} for image in images]}
        results = []
        for prediction in self.predict(model, body)["predictions"]:
            top = _top_k(prediction["scores"], prediction.get("classes"), top_k)
            results.append(ImagePrediction(prediction.get("label", top[0][0]), top))
        return results

    def status(self, model: str) -> dict:
        return self.request(f"/v1/models/{model}")

    def metadata(self, model: str) -> dict:
        return self.request(f"/v1/models/{model}/metadata")
