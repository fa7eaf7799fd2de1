"""Every pipeline setting in one place (TFX template style). Runners own the physical paths."""
from __future__ import annotations

from components import contract

PIPELINE_NAME = "image-retrain"
MODEL_NAME = "image_classifier"

# Pretrained image feature-vector module: a TF Hub handle, a local SavedModel, or a builtin name.
MODULE_HANDLE = contract.DEFAULT_MODULE_HANDLE

# Module functions referenced by dotted path: importable wherever the project is installed (container image too).
RUN_FN = "pipelines.models.classifier.run_fn"

# Ingestion: train/eval/test hash buckets of the file's relative path.
SPLIT_RATIOS = contract.DEFAULT_SPLIT_RATIOS

# Embedding stage.
EMBEDDING_BATCH_SIZE = contract.DEFAULT_EMBEDDING_BATCH_SIZE

# Head training hyperparameters (overridable from the CLI / custom_config).
HYPERPARAMETERS = {
    "epochs": 100,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "dropout": 0.2,
    "hidden_units": 0,            # 0: dropout + dense softmax only
    "label_smoothing": 0.1,
    "early_stopping_patience": 8,
    "augment_copies": 0,          # >0: flipped/cropped/brightened copies per train image, embedded on the fly
    "augment_flip": True,
    "fine_tune_variables": 0,     # >0: also train the module's top N variables end to end on images (slow on CPU)
    "fine_tune_epochs": 3,
    "fine_tune_learning_rate": 1e-3,
    "seed": 42,
}

# Blessing: accuracy on the test split >= threshold and >= baseline - tolerance.
EVAL_ACCURACY_THRESHOLD = 0.6
BASELINE_TOLERANCE = 0.01

# Beam on the local DirectRunner. The embedding stage's TensorFlow already uses both cores, so more worker processes
# only add model copies; see BENCHMARKS.md for the measurement behind this default.
LOCAL_BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
