"""Writes the ELPV solar-cell images (PyPI `elpv-dataset`, CC BY-NC-SA: development and benchmarks only, never
committed) as PNG files plus one manifest per task, with a stratified, seeded train/eval/test split.

Tasks (Deitsch et al., Solar Energy 2019):
  binary   defective (defect probability >= 0.5) vs functional: the paper's 75/25 task
  grade    the four annotated defect probabilities 0, 1/3, 2/3, 1 as four classes
  type     mono- vs polycrystalline cells

Split: `--test-fraction` (25 %) held out for the test split the Evaluator reports; the remaining 75 % is what the
trainer sees, of which `--eval-fraction` of the whole set is the eval split (head early stopping and the best
fine-tuning epoch). Both cuts are stratified by the task's label (scikit-learn, fixed seed).

    make setup   # installs the project editable with its extras, elpv-dataset (the bench extra) included
    .venv/bin/python benchmarks/elpv_manifest.py --output-dir output/elpv
    .venv/bin/image-retrain run --manifest output/elpv/binary.csv ...
"""
from __future__ import annotations

import argparse
import collections
import csv
import os

import numpy as np

TASKS = ("binary", "grade", "type")
DEFECTIVE_FROM = 0.5   # the paper's binary cut on the annotated defect probability


def task_labels(probabilities: np.ndarray, types: np.ndarray) -> dict[str, list[str]]:
    return {
        "binary": ["defective" if p >= DEFECTIVE_FROM else "functional" for p in probabilities],
        "grade": [f"defect_{round(p * 100):03d}" for p in probabilities],   # defect_000, _033, _067, _100
        "type": [str(t) for t in types],                                    # mono, poly
    }


def stratified_splits(labels: list[str], test_fraction: float, eval_fraction: float, seed: int) -> list[str]:
    from sklearn.model_selection import train_test_split

    indices = np.arange(len(labels))
    seen, test = train_test_split(indices, test_size=test_fraction, stratify=labels, random_state=seed)
    seen_labels = [labels[i] for i in seen]
    train, evaluation = train_test_split(seen, test_size=eval_fraction / (1 - test_fraction), stratify=seen_labels,
                                         random_state=seed)
    splits = [""] * len(labels)
    for name, members in (("train", train), ("eval", evaluation), ("test", test)):
        for i in members:
            splits[i] = name
    return splits


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="output/elpv", help="Images and manifests go here (default: "
                                                                   "%(default)s; keep it out of git).")
    parser.add_argument("--test-fraction", type=float, default=0.25)
    parser.add_argument("--eval-fraction", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        from elpv_dataset.utils import load_dataset
    except ImportError:
        raise SystemExit("elpv-dataset is not installed: run `make setup` (it installs the bench extra)") from None
    from PIL import Image

    images, probabilities, types = load_dataset()
    image_dir = os.path.join(args.output_dir, "images")
    os.makedirs(image_dir, exist_ok=True)
    names = []
    for index, pixels in enumerate(images):
        name = f"cell{index + 1:04d}.png"
        path = os.path.join(image_dir, name)
        if not os.path.exists(path):
            Image.fromarray(pixels).save(path)
        names.append(os.path.join("images", name))
    for task, labels in task_labels(probabilities, types).items():
        splits = stratified_splits(labels, args.test_fraction, args.eval_fraction, args.seed)
        manifest = os.path.join(args.output_dir, f"{task}.csv")
        with open(manifest, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "split"])
            writer.writerows(zip(names, labels, splits))
        counts = collections.Counter(zip(splits, labels))
        print(f"{manifest}: " + ", ".join(f"{split}/{label} {n}" for (split, label), n in sorted(counts.items())))


if __name__ == "__main__":
    main()
