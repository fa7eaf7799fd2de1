"""The image classifier contract served: REST b64 JPEG, gRPC Predict, gRPC Classify, bad images, the predict CLI."""
from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.request

import pytest
from model_fixtures import solid_image_bytes

from serving import predict_cli
from serving.client import RestClient, ServerError
from serving.grpc_client import GrpcClient

RED, GREEN, BLUE = (230, 20, 20), (20, 230, 20), (20, 20, 230)


@pytest.fixture(scope="module")
def server(models_dir):
    from conftest import free_port

    from serving.server import ModelServer, ServerOptions

    server = ModelServer(ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="classifier",
                                       model_base_path=str(models_dir / "classifier"), enable_batching=True))
    server.start()
    yield server
    server.stop(grace_seconds=2)


def test_rest_b64_jpeg_to_label(server):
    body = {"instances": [{"b64": base64.b64encode(solid_image_bytes(RED)).decode()}]}
    request = urllib.request.Request(f"http://localhost:{server.rest_port}/v1/models/classifier:predict",
                                     data=json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        prediction = json.loads(response.read())["predictions"][0]
    assert prediction["label"] == "red"
    assert prediction["classes"] == ["red", "green", "blue"]
    assert prediction["scores"][0] > 0.9 and abs(sum(prediction["scores"]) - 1) < 1e-5

    results = RestClient(f"http://localhost:{server.rest_port}").predict_images(
        "classifier", [solid_image_bytes(GREEN, "PNG"), solid_image_bytes(BLUE, "BMP")], top_k=2)
    assert [r.label for r in results] == ["green", "blue"]
    assert [label for label, _ in results[0].top_k][0] == "green" and len(results[0].top_k) == 2


def test_grpc_predict_string_tensor_and_classify_tf_example(server):
    client = GrpcClient(f"localhost:{server.grpc_port}")
    try:
        results = client.predict_images("classifier", [solid_image_bytes(BLUE), solid_image_bytes(RED, "GIF")])
        assert [r.label for r in results] == ["blue", "red"]
        classified = client.classify_images("classifier", [solid_image_bytes(GREEN)])
        assert [label for label, _ in classified[0]] == ["red", "green", "blue"]
        scores = [score for _, score in classified[0]]
        assert max(range(3), key=scores.__getitem__) == 1
        with pytest.raises(ServerError) as error:
            client.predict_images("classifier", [b"definitely not an image"])
        assert error.value.code == "INVALID_ARGUMENT"
    finally:
        client.close()


def test_non_image_bytes_are_a_400_with_message(server):
    with pytest.raises(ServerError) as error:
        RestClient(f"http://localhost:{server.rest_port}").predict_images("classifier", [b"\x00\x01garbage"])
    assert error.value.code == 400
    assert "image" in error.value.message.lower()


def test_predict_cli_prints_table(server, tmp_path, capsys):
    paths = []
    for name, colour in (("red.jpg", RED), ("blue.png", BLUE)):
        path = tmp_path / name
        path.write_bytes(solid_image_bytes(colour, "JPEG" if name.endswith("jpg") else "PNG"))
        paths.append(str(path))
    for target in (["--server", f"localhost:{server.grpc_port}"], ["--rest", f"http://localhost:{server.rest_port}"]):
        parser = argparse.ArgumentParser()
        predict_cli.add_arguments(parser)
        args = parser.parse_args(paths + target + ["--model", "classifier", "--top-k", "2"])
        assert predict_cli.main(args) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["image", "label", "top-k"]
        assert lines[2].split()[:3] == [paths[0], "red", "red"]
        assert lines[3].split()[:3] == [paths[1], "blue", "blue"]
