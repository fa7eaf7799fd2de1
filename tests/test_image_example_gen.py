"""ImageExampleGen: real Beam runs of the executor on generated images, plus one LocalDagRunner run and a KFP v2
compile. Every run reads the written TFRecords back and checks them against the files on disk."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from image_fixtures import NON_ASCII_LABEL, make_bad_input_corpus, make_shapes_dataset

from image_retrain.contract import REJECTS_FILE
from image_retrain.ingestion_files import REJECTS_COLUMNS, Reject


def read_rejects(examples_uri) -> list[Reject]:
    """Every skipped input of an ImageExampleGen artifact, as its rejects.csv lists them (parsed by pandas)."""
    frame = pd.read_csv(Path(examples_uri) / REJECTS_FILE, dtype=str, keep_default_na=False)
    assert tuple(frame.columns) == REJECTS_COLUMNS
    return [Reject(*row) for row in frame.itertuples(index=False)]

pytestmark = pytest.mark.timeout(300)

SPLITS = ("train", "eval", "test")


# ----------------------------------------------------------------------------------------------- helpers


def run_executor(component, output_dir: Path):
    """Runs the component's executor exactly as the orchestrator would after the driver: exec properties as
    JSON strings, one Examples output artifact."""
    from google.protobuf import message
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    from components.image_example_gen.executor import Executor

    exec_properties = {
        key: proto_utils.proto_to_json(value) if isinstance(value, message.Message) else value
        for key, value in component.exec_properties.items()
    }
    examples = standard_artifacts.Examples()
    examples.uri = str(output_dir)
    Executor().Do({}, {"examples": [examples]}, exec_properties)
    return examples


def read_examples(examples_uri) -> dict[str, dict[str, dict]]:
    """{split: {path: {feature: value}}} from the gzipped TFRecords."""
    import tensorflow as tf

    result = {}
    for split in SPLITS:
        files = sorted(str(p) for p in Path(examples_uri, f"Split-{split}").glob("*.gz"))
        assert files, f"no TFRecord files for split {split}"
        rows = {}
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            assert sorted(feature.keys()) == ["image_raw", "label", "label_name", "path", "sha256"]
            row = {
                "image_raw": feature["image_raw"].bytes_list.value[0],
                "label": feature["label"].int64_list.value[0],
                "label_name": feature["label_name"].bytes_list.value[0].decode("utf-8"),
                "sha256": feature["sha256"].bytes_list.value[0].decode("ascii"),
            }
            path = feature["path"].bytes_list.value[0].decode("utf-8")
            assert path not in rows, f"{path} written twice"
            rows[path] = row
        result[split] = rows
    return result


def split_of(examples_by_split) -> dict[str, str]:
    return {path: split for split, rows in examples_by_split.items() for path in rows}


def expected_hash_split(path: str, ratios=(8, 1, 1)) -> str:
    """Independent re-implementation of the documented rule: sha256 of the serialized `path` feature modulo the
    bucket total (what TFX's partition does), so the split is a pure function of the path on any machine."""
    import tensorflow as tf

    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode("utf-8")]))
    bucket = int(hashlib.sha256(feature.SerializeToString(deterministic=True)).hexdigest(), 16) % sum(ratios)
    edge = 0
    for name, ratio in zip(SPLITS, ratios):
        edge += ratio
        if bucket < edge:
            return name
    raise AssertionError("unreachable")


def rejects_by_key(examples_uri) -> dict[tuple[str, str], str]:

    return {(r.path, r.label): r.reason for r in read_rejects(examples_uri)}


# ----------------------------------------------------------------------------------------------- fast unit tests


def test_sniff_format_names_content_not_extension():
    from components.image_example_gen.validation import sniff_format

    assert sniff_format(b"\xff\xd8\xff\xe0\x00\x10JFIF") == "JPEG"
    assert sniff_format(b"\x89PNG\r\n\x1a\n\x00") == "PNG"
    assert sniff_format(b"GIF89a\x01\x00") == "GIF"
    assert sniff_format(b"BM6\x00\x00\x00") == "BMP"
    assert sniff_format(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "WEBP"
    assert sniff_format(b"hello, I am text\n") == "text"
    assert sniff_format(b"\x00\x01\x02\x03\xfe") == "unknown"


def test_constructor_rejects_bad_arguments(tmp_path):
    from components.image_example_gen.component import ImageExampleGen

    with pytest.raises(ValueError, match="exactly one of input_base"):
        ImageExampleGen()
    with pytest.raises(ValueError, match="exactly one of input_base"):
        ImageExampleGen(input_base=str(tmp_path), manifest=str(tmp_path / "m.csv"))
    with pytest.raises(ValueError, match="3 positive integers"):
        ImageExampleGen(input_base=str(tmp_path), split_ratios=(8, 2))
    with pytest.raises(ValueError, match="3 positive integers"):
        ImageExampleGen(input_base=str(tmp_path), split_ratios=(0.8, 0.1, 0.1))


# ----------------------------------------------------------------------------------------------- executor runs


def test_shapes_folder_features_vocabulary_and_stable_splits(tmp_path):
    from components.image_example_gen.component import ImageExampleGen
    from image_retrain.ingestion_files import read_ingestion_summary, read_label_vocabulary

    data = tmp_path / "shapes"
    written = make_shapes_dataset(data, n_per_class=20)
    first = run_executor(ImageExampleGen(input_base=str(data)), tmp_path / "run1")

    vocabulary = read_label_vocabulary(first.uri)
    assert vocabulary == ["circle", "square", "triangle"]
    assert (Path(first.uri) / "labels.txt").read_text() == "circle\nsquare\ntriangle\n"
    assert read_rejects(first.uri) == []
    by_split = read_examples(first.uri)
    splits = split_of(by_split)
    expected_paths = {f"{label}/{p.name}" for label, paths in written.items() for p in paths}
    assert set(splits) == expected_paths
    for rows in by_split.values():
        for path, row in rows.items():
            raw = (data / path).read_bytes()
            assert row["image_raw"] == raw  # the encoded file bytes as stored, not re-encoded
            assert row["sha256"] == hashlib.sha256(raw).hexdigest()
            assert row["label_name"] == path.split("/")[0]
            assert vocabulary[row["label"]] == row["label_name"]
    assert splits == {path: expected_hash_split(path) for path in splits}
    assert len(by_split["train"]) > len(by_split["eval"]) and len(by_split["train"]) > len(by_split["test"])

    summary = read_ingestion_summary(first.uri)
    counts = {split: len(rows) for split, rows in by_split.items()}
    assert summary["split_counts"] == counts and summary["num_rejects"] == 0
    assert first.get_string_custom_property("label_vocabulary") == json.dumps(vocabulary)
    assert first.get_int_custom_property("num_classes") == 3
    assert first.get_int_custom_property("num_rejects") == 0
    assert {s: first.get_int_custom_property(f"num_examples_{s}") for s in SPLITS} == counts
    assert first.split_names == json.dumps(list(SPLITS))

    # Adding files (and a whole new class) never moves an existing file to another split.
    make_shapes_dataset(data, n_per_class=15, start_index=20)
    make_shapes_dataset(data, n_per_class=5, classes=("diamond",))
    second = run_executor(ImageExampleGen(input_base=str(data)), tmp_path / "run2")
    splits_after = split_of(read_examples(second.uri))
    assert len(splits_after) == 60 + 45 + 5
    assert {path: splits_after[path] for path in splits} == splits
    assert read_label_vocabulary(second.uri) == ["circle", "diamond", "square", "triangle"]


def test_bad_input_corpus_folder_layout(tmp_path):
    from components.image_example_gen.component import ImageExampleGen
    from image_retrain.ingestion_files import read_ingestion_summary, read_label_vocabulary

    corpus = make_bad_input_corpus(tmp_path)
    examples = run_executor(ImageExampleGen(input_base=str(corpus.folder)), tmp_path / "out")

    rejects = rejects_by_key(examples.uri)
    assert {key: reason.split(":")[0] for key, reason in rejects.items()} == corpus.folder_rejects
    by_split = read_examples(examples.uri)
    assert set(split_of(by_split)) == corpus.folder_accepted
    vocabulary = read_label_vocabulary(examples.uri)
    assert vocabulary == corpus.folder_vocabulary  # the empty class is left out
    assert NON_ASCII_LABEL in vocabulary

    # Reasons say precisely what was wrong.
    conflict = rejects[("circle/shared.png", "circle")]
    assert "'circle' and 'square'" in conflict and "square/shared.png" in conflict
    assert rejects[("square/shared.png", "square")] == conflict
    assert "circle/good_0.png" in rejects[("circle/good_0_copy.png", "circle")]
    assert "1x1" in rejects[("circle/one_by_one.png", "circle")]
    assert "FIFO" in rejects[("square/unreadable_fifo.jpg", "square")]
    assert "gone.jpg" in rejects[("square/dangling_link.jpg", "square")]
    assert "0 bytes" in rejects[("circle/zero_byte.jpg", "circle")]
    assert "text" in rejects[("circle/text_file.jpg", "circle")]
    assert "JPEG" in rejects[("circle/truncated.jpg", "circle")]
    bomb = rejects[("circle/bomb_23000x23000.png", "circle")]
    assert "23000x23000" in bomb and "limit of 100000000" in bomb
    assert "13000x13000" in rejects[("square/header_claims_13000x13000.jpg", "square")]
    assert "outside_data_root/elsewhere.png" in rejects[("circle/link_to_elsewhere.png", "circle")]
    assert "not searched" in rejects[("circle/z.jpg/", "circle")]

    # Non-ASCII names survive into the examples; the 6000x4000 image is stored as its original bytes.
    rows = {path: row for split_rows in by_split.values() for path, row in split_rows.items()}
    non_ascii = f"{NON_ASCII_LABEL}/0_façade_图片.png"
    assert rows[non_ascii]["label_name"] == NON_ASCII_LABEL
    assert vocabulary[rows[non_ascii]["label"]] == NON_ASCII_LABEL
    assert rows["square/huge_6000x4000.jpg"]["image_raw"] == (corpus.folder / "square/huge_6000x4000.jpg").read_bytes()

    summary = read_ingestion_summary(examples.uri)
    assert summary["num_rejects"] == len(corpus.folder_rejects)
    assert summary["num_examples"] == len(corpus.folder_accepted)
    assert examples.get_int_custom_property("num_rejects") == len(corpus.folder_rejects)
    assert json.loads(examples.get_string_custom_property("label_vocabulary")) == vocabulary


def test_bad_input_corpus_manifest_layout(tmp_path):
    from components.image_example_gen.component import ImageExampleGen
    from image_retrain.ingestion_files import read_label_vocabulary

    corpus = make_bad_input_corpus(tmp_path)
    examples = run_executor(ImageExampleGen(manifest=str(corpus.manifest)), tmp_path / "out")

    rejects = rejects_by_key(examples.uri)
    assert {key: reason.split(":")[0] for key, reason in rejects.items()} == corpus.manifest_rejects
    assert "'circle' and 'square'" in rejects[("images/circle/good_2.png", "circle")]
    rows = {path: row for split_rows in read_examples(examples.uri).values() for path, row in split_rows.items()}
    assert set(rows) == corpus.manifest_accepted  # paths exactly as written in the manifest (incl. absolute)
    assert read_label_vocabulary(examples.uri) == corpus.manifest_vocabulary
    assert rows["images/circle/cmyk.jpg"]["image_raw"] == (corpus.folder / "circle/cmyk.jpg").read_bytes()


def test_manifest_split_column_and_relative_paths(tmp_path):
    from components.image_example_gen.component import ImageExampleGen

    written = make_shapes_dataset(tmp_path / "data" / "pics", n_per_class=8)
    manifest_dir = tmp_path / "data"
    lines = ["path,label,split"]
    forced = {}
    for label, paths in written.items():
        for i, path in enumerate(paths):
            rel = path.relative_to(manifest_dir).as_posix()
            split = {"circle": "test", "square": "eval" if i % 2 else ""}.get(label, "")
            lines.append(f"{rel},{label},{split}")
            forced[rel] = split
    (manifest_dir / "labels.csv").write_text("\n".join(lines) + "\n")
    workdir_elsewhere = tmp_path / "elsewhere"
    workdir_elsewhere.mkdir()

    examples = run_executor(ImageExampleGen(manifest=str(manifest_dir / "labels.csv")), tmp_path / "out")
    splits = split_of(read_examples(examples.uri))
    assert set(splits) == set(forced)
    for path, split in splits.items():
        assert split == (forced[path] or expected_hash_split(path)), path

    # A split value that is not one of the output splits is a manifest error, reported before any work.
    (manifest_dir / "bad.csv").write_text("path,label,split\npics/circle/circle_000.jpg,circle,validation\n"
                                          "pics/square/square_000.jpg,square,train\n")
    with pytest.raises(ValueError, match=r"column 'split' has value\(s\) \['validation'\]"):
        run_executor(ImageExampleGen(manifest=str(manifest_dir / "bad.csv")), tmp_path / "out_bad")
    (manifest_dir / "nolabel.csv").write_text("file,class\na.jpg,x\n")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['path', 'label'\]"):
        run_executor(ImageExampleGen(manifest=str(manifest_dir / "nolabel.csv")), tmp_path / "out_bad2")


def test_manifest_paths_outside_its_folder_are_rejected_unless_allowed(tmp_path):
    """A manifest names the files the pipeline reads and keeps in its examples: rows leading out of the manifest's
    folder (absolute paths, `../`, a link pointing out, another bucket) are rejects, until the run allows them."""
    from components.image_example_gen.sources import read_manifest

    data, outside = tmp_path / "data", tmp_path / "secrets"
    make_shapes_dataset(data / "pics", n_per_class=1, classes=("circle",))
    outside.mkdir()
    (outside / "key.png").write_bytes(b"private")
    (data / "pics" / "link.png").symlink_to(outside / "key.png")
    inside = sorted(p.relative_to(data).as_posix() for p in (data / "pics").rglob("*.jpg"))
    leaving = ["/etc/passwd", "../secrets/key.png", "pics/../../secrets/key.png", "pics/link.png",
               "gs://another-bucket/x.png", str(outside / "key.png")]
    manifest = data / "labels.csv"
    manifest.write_text("path,label\n" + "".join(f"{path},circle\n" for path in inside + leaving))

    listing = read_manifest(str(manifest), ["train", "eval", "test"])
    assert [c.path for c in listing.candidates] == inside
    assert [r.path for r in listing.rejects] == leaving
    assert all(r.reason.startswith("path_outside_manifest: row ") and "--allow-paths-outside-manifest" in r.reason
               for r in listing.rejects)
    allowed = read_manifest(str(manifest), ["train", "eval", "test"], allow_paths_outside=True)
    assert [c.path for c in allowed.candidates] == inside + leaving and not allowed.rejects


def test_the_allow_paths_outside_manifest_flag_reaches_the_component(tmp_path):
    import argparse

    from components.image_example_gen.executor import IngestionSettings
    from pipelines import options as pipeline_options
    from pipelines.local_runner import RunOptions
    from pipelines.pipeline import create_pipeline

    manifest = tmp_path / "labels.csv"
    manifest.write_text("path,label\na.png,x\n")
    parser = argparse.ArgumentParser()
    pipeline_options.add_arguments(parser, RunOptions)
    for flags, allowed in (([], False), (["--allow-paths-outside-manifest"], True)):
        fields = pipeline_options.from_args(parser.parse_args(["--manifest", str(manifest), *flags]))
        options = RunOptions(**fields, output_dir=str(tmp_path / "out"))
        (example_gen,) = [c for c in create_pipeline(options).components if c.id == "ImageExampleGen"]
        settings = IngestionSettings.from_exec_properties(example_gen.exec_properties)
        assert settings.allow_paths_outside_manifest is allowed


def test_manifest_header_is_checked_before_anything_runs(tmp_path):
    from components.image_example_gen.component import ImageExampleGen
    from pipelines.local_runner import RunOptions, check_inputs

    # Many rows, no label column: refused from the header row alone, at pipeline construction and by the CLI check.
    manifest = tmp_path / "no_label.csv"
    manifest.write_text("path,split\n" + "x.jpg,train\n" * 200_000)
    for check in (lambda: ImageExampleGen(manifest=str(manifest)), lambda: check_inputs(RunOptions(
            manifest=str(manifest)))):
        with pytest.raises(ValueError, match=r"lacks column\(s\) \['label'\].*found columns \['path', 'split'\]"):
            check()
    (tmp_path / "latin1.csv").write_bytes("pfad,étiquette\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not a readable UTF-8 CSV"):
        ImageExampleGen(manifest=str(tmp_path / "latin1.csv"))


def test_fewer_than_two_classes_fails_with_clear_message(tmp_path):
    from components.image_example_gen.component import ImageExampleGen

    # Visible at listing time: one class folder with files, one empty.
    one_class = tmp_path / "one_class"
    make_shapes_dataset(one_class, n_per_class=3, classes=("circle",))
    (one_class / "square").mkdir()
    with pytest.raises(ValueError, match=r"at least 2 classes with images; found 1: 'circle' \(3 files\), "
                                         r"'square' \(0 files\)"):
        run_executor(ImageExampleGen(input_base=str(one_class)), tmp_path / "out1")

    # Only visible after decoding: the second class holds nothing but broken files.
    (one_class / "square" / "broken.jpg").write_bytes(b"not an image")
    (one_class / "square" / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"at least 2 classes with usable images; after validation 1 remain "
                                         r"\(\['circle'\]\)") as failure:
        run_executor(ImageExampleGen(input_base=str(one_class)), tmp_path / "out2")
    assert "'unsupported_format': 1" in str(failure.value) and "'empty_file': 1" in str(failure.value)
    rejects = rejects_by_key(tmp_path / "out2")
    assert rejects[("square/", "square")].startswith("class_without_usable_images: all 2 file(s) were rejected")


# ----------------------------------------------------------------------------------------------- orchestrators


@pytest.mark.e2e
def test_local_dag_runner_records_examples_in_mlmd(tmp_path):
    from ml_metadata.metadata_store import metadata_store
    from tfx import v1 as tfx

    from components.image_example_gen.component import ImageExampleGen
    from image_retrain.ingestion_files import read_label_vocabulary
    from pipelines import configs
    from pipelines.beam_args import with_worker_code_source

    data = tmp_path / "shapes"
    make_shapes_dataset(data, n_per_class=6)
    (data / "square" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    metadata_path = tmp_path / "metadata.db"
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="image-example-gen-test",
        pipeline_root=str(tmp_path / "root"),
        components=[ImageExampleGen(input_base=str(data), split_ratios=(2, 1, 1))],
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path)),
        beam_pipeline_args=with_worker_code_source(["--direct_num_workers=1"], configs.IMAGE),
    )
    tfx.orchestration.LocalDagRunner().run(pipeline)

    store = metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(str(metadata_path)))
    [artifact] = store.get_artifacts_by_type("Examples")
    properties = artifact.custom_properties
    assert json.loads(properties["label_vocabulary"].string_value) == ["circle", "square", "triangle"]
    assert properties["num_rejects"].int_value == 1
    assert sum(properties[f"num_examples_{s}"].int_value for s in SPLITS) == 18
    assert read_label_vocabulary(artifact.uri) == ["circle", "square", "triangle"]
    by_split = read_examples(artifact.uri)
    assert {p: s for p, s in split_of(by_split).items()} == {
        p: expected_hash_split(p, (2, 1, 1)) for p in split_of(by_split)}


def test_compiles_for_kubeflow_v2(tmp_path):
    from tfx import v1 as tfx

    from components.image_example_gen.component import ImageExampleGen

    pipeline = tfx.dsl.Pipeline(
        pipeline_name="image-example-gen-kfp",
        pipeline_root="gs://bucket/root",
        components=[ImageExampleGen(input_base="gs://bucket/images")],
    )
    output = tmp_path / "pipeline.json"
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image="image-retrain:test"),
        output_filename=str(output))
    runner.run(pipeline, write_out=True)
    spec = output.read_text()
    assert "components.image_example_gen.executor.Executor" in spec
    assert "file_based_example_gen.driver" in spec  # the standard driver; no custom driver needed
    assert "partition_feature_name" in spec and "folder_per_class" in spec
