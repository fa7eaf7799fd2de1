"""The REST client of a TF Serving-compatible server (plain HTTP, no TensorFlow import) and what both clients answer.

    RestClient("http://localhost:8501").predict_images("flowers", [jpeg_bytes, ...])

returns one ImagePrediction per image: the top-1 label and the top-k (label, score) pairs, for models with the image
classifier format (serving/model_format.py). serving/grpc_client.py is the gRPC twin, which loads TensorFlow's protos:
`image-retrain predict --rest` starts without them.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import urllib.error
import urllib.request

from serving.model_format import (
    CLASSES_OUTPUT,
    IMAGE_BYTES_INPUT,
    LABEL_OUTPUT,
    PREDICT_SIGNATURE,
    SCORES_OUTPUT,
)


@dataclasses.dataclass
class ImagePrediction:
    label: str
    top_k: list[tuple[str, float]]


def top_k_pairs(scores, classes, k: int) -> list[tuple[str, float]]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return [(classes[i] if classes is not None else str(i), float(scores[i])) for i in order]


def as_text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class ServerError(RuntimeError):
    """The server answered with an error; `code` is the gRPC code name or the HTTP status."""

    def __init__(self, code, message: str):
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message


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
        body = {"signature_name": PREDICT_SIGNATURE,
                "instances": [{IMAGE_BYTES_INPUT: {"b64": base64.b64encode(image).decode("ascii")}}
                              for image in images]}
        results = []
        for prediction in self.predict(model, body)["predictions"]:
            top = top_k_pairs(prediction[SCORES_OUTPUT], prediction.get(CLASSES_OUTPUT), top_k)
            results.append(ImagePrediction(prediction.get(LABEL_OUTPUT, top[0][0]), top))
        return results

    def status(self, model: str) -> dict:
        return self.request(f"/v1/models/{model}")

    def metadata(self, model: str) -> dict:
        return self.request(f"/v1/models/{model}/metadata")
