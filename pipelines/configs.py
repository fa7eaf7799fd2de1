"""Every pipeline setting in one place (TFX template style). Runners own the physical paths."""
from __future__ import annotations

from image_retrain import contract

PIPELINE_NAME = "image-retrain"
MODEL_NAME = "image_classifier"

# Pretrained image feature-vector module: a TF Hub handle, a local SavedModel, or a builtin name.
MODULE_HANDLE = contract.DEFAULT_MODULE_HANDLE

# The image built from the repository's Dockerfile (TFX and the project installed): Kubeflow steps and remote Beam
# workers run it; override with `image-retrain kfp compile --image` for your registry.
IMAGE = "image-retrain:latest"

# Module functions referenced by dotted path: importable wherever the project is installed (container image too).
RUN_FN = "pipelines.models.trainer.run_fn"
TUNER_FN = "pipelines.models.tuner.tuner_fn"

# Ingestion: train/eval/test hash buckets of the file's relative path.
SPLIT_RATIOS = contract.DEFAULT_SPLIT_RATIOS

# Embedding stage.
EMBEDDING_BATCH_SIZE = contract.DEFAULT_EMBEDDING_BATCH_SIZE

# Batch prediction (`image-retrain batch-predict`): labels per image, and images per model call at most.
BATCH_PREDICT_TOP_K = 3
BATCH_PREDICT_BATCH_SIZE = 32

# Head training hyperparameters (overridable from the CLI / custom_config).
HYPERPARAMETERS = {
    "epochs": 100,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "dropout": 0.2,
    "hidden_units": 0,            # 0: dropout + dense softmax only
    "label_smoothing": 0.1,
    "early_stopping_patience": 8,
    "augment_copies": 0,          # >0: augmented copies per train image, embedded on the fly, for the head
    # Augmentations (augment_copies and fine-tuning), each switchable; fit them to the data. The defaults change no
    # shape's meaning (digits and text must not flip; photos and solar cells may).
    "augment_flip": False,        # random left-right flip
    "augment_vertical_flip": False,
    "augment_rotate90": False,    # random multiple of 90 degrees
    "augment_crop": 0.9,          # random crop keeping at least this fraction of each side (1.0: off)
    "augment_brightness": 0.1,    # max brightness delta (0: off)
    "augment_contrast": 0.0,      # max relative contrast change (0: off)
    "class_weights": False,       # weight the loss by n / (classes * count): for imbalanced labels
    "image_size": 0,              # module input side in pixels (0: the module's own, 224 for EfficientNet-Lite0)
    # Fine-tuning, after the head: the module's top N variables (2 per layer; -1: all) with the head on images. On by
    # default: these settings took digits from 0.930 (frozen) to 0.989 held-out, the whole module took ELPV solar
    # cells from 0.83 to 0.88 (BENCHMARKS.md, "Fine-tuning"); an epoch worse on eval than the frozen head is not kept.
    "fine_tune_variables": -1,    # 0: off (frozen embeddings only: seconds instead of ~1 min per 1,000 images/epoch)
    "fine_tune_epochs": 4,
    "fine_tune_learning_rate": 2e-3,   # the head's; SGD with Nesterov momentum 0.9
    "fine_tune_layer_decay": 0.9,      # each module layer further below the head: learning rate times this
    "fine_tune_warmup_epochs": 0.5,    # linear warm-up, then cosine decay to zero
    "fine_tune_batch_size": 32,
    "fine_tune_ema_decay": 0.0,        # >0: evaluate and keep a moving average of the weights (e.g. 0.99)
    # Test-time augmentation: the served scores (and fine-tuning's eval) average the network over this many mirrored
    # or rotated views of each image, 1 (off), 2, 4 or 8, at that many times the inference cost. Only for data whose
    # meaning survives the flips and rotations trained with (solar cells, not digits).
    "test_time_views": 1,              # one of TEST_TIME_VIEWS
    # Warm start (pipelines/models/warm_start.py): a retraining over the same classes continues the served (or latest
    # blessed) model, fine-tuning it on the new training images and a replay sample of the others.
    "from_scratch": False,             # always train from the image module instead
    "warm_start_epochs": 2,            # fine-tuning epochs when continuing
    "replay_fraction": 0.1,            # share of the earlier training images replayed (at least as many as new)
    "seed": 42,
}

TEST_TIME_VIEWS = (1, 2, 4, 8)

# Tuner (optional, `--tune`): KerasTuner random search over these choices, each trial one full training run (head on
# embeddings: seconds; with fine-tuning on, the fine_tune_* choices too: minutes). Explicitly set values stay fixed.
TUNER_SEARCH_SPACE = {
    "learning_rate": [1e-3, 3e-3, 1e-2],
    "dropout": [0.1, 0.2, 0.4],
    "hidden_units": [0, 256],
    "label_smoothing": [0.0, 0.1],
    "fine_tune_learning_rate": [3e-3, 1e-2, 3e-2],
    "fine_tune_layer_decay": [0.8, 0.9, 1.0],
    "fine_tune_ema_decay": [0.0, 0.99],
}
TUNER_TRIALS = 6

# The TF Serving release the manifests deploy (kubeflow/manifests: the tensorflow/serving image's tag). Each release is
# built on the TensorFlow of the same number; a model is pushed only once its ops are in that TensorFlow's registry
# (image_retrain/op_registries) and that TensorFlow has loaded and answered it (components/serving_validator).
# 2.20.0 is the newest release with a published tag, and it loads our TF 2.21 exports.
TF_SERVING_RELEASE = "2.20.0"

# Blessing: accuracy on the test split >= threshold and >= baseline - tolerance.
EVAL_ACCURACY_THRESHOLD = 0.6
BASELINE_TOLERANCE = 0.01

# Beam on the DirectRunner, inside the process (or the Kubeflow step's pod). The embedding stage's TensorFlow already
# uses both cores, so more worker processes only add model copies (BENCHMARKS.md); and in a pod
# `--direct_num_workers=0` would start one TensorFlow-loading process per core of the *node*, whatever the pod's CPU
# limit. Give a step more with --beam-arg=--direct_num_workers=N --beam-arg=--direct_running_mode=multi_processing,
# or a distributed runner.
LOCAL_BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]
