"""The contract between the pipeline's stages, declared once (like the TFX taxi template's features.py).

Example feature keys, split names, the files each artifact carries, the artifact properties downstream readers rely
on, and the defaults that components and pipeline settings share. Ingestion, embedding, training, evaluation, the
report and the runners import it; `serving/` does not (the served model's own format is serving/model_format.py).
Imports nothing heavy, so CLIs can use it before TensorFlow loads.
"""
from __future__ import annotations

from serving.model_format import EXAMPLE_IMAGE_FEATURE

# tf.Example features written by ImageExampleGen; ImageEmbedder adds EMBEDDING_KEY and keeps the rest.
IMAGE_KEY = EXAMPLE_IMAGE_FEATURE  # the image file's bytes, as read (the served classify signature reads it too)
LABEL_KEY = "label"            # int64: index into the sorted label vocabulary (LABELS_FILE)
LABEL_NAME_KEY = "label_name"  # the class name, for humans and the report
PATH_KEY = "path"              # path relative to the data root / manifest; the hash split partitions on it
SHA256_KEY = "sha256"          # hex digest of IMAGE_KEY: de-duplication and the embedding cache key
EMBEDDING_KEY = "embedding"    # float list: the image module's feature vector (the head's input)
# int64 1/0: the embedding came from the cache, i.e. an earlier run saw the image; a warm-started Trainer trains on
# the images new to it (0) and a replay sample of the others (pipelines/models/warm_start.py).
EMBEDDING_CACHED_KEY = "embedding_cached"

# Output splits of ImageExampleGen, in the order of the split ratios.
TRAIN_SPLIT = "train"
EVAL_SPLIT = "eval"            # early stopping during training
TEST_SPLIT = "test"            # TFMA evaluation, blessing and the report
SPLIT_NAMES = (TRAIN_SPLIT, EVAL_SPLIT, TEST_SPLIT)

# Output keys of our components (TFX's standard_component_specs names its own: EXAMPLES_KEY, MODEL_KEY, ...).
EMBEDDED_EXAMPLES_KEY = "embedded_examples"  # ImageEmbedder
REPORT_KEY = "report"                        # ModelReport: the report's folder
METRICS_KEY = "metrics"                      # ModelReport, for the KFP UI: scalar metrics (system.Metrics)
CONFUSION_MATRIX_KEY = "confusion_matrix"    # ModelReport, for the KFP UI: system.ClassificationMetrics
REPORT_HTML_KEY = "report_html"              # ModelReport, for the KFP UI: the page (system.HTML)
REPORT_SUMMARY_KEY = "summary"               # ModelReport, for the KFP UI: the report without pictures (Markdown)
FINGERPRINT_KEY = "fingerprint"              # InputFingerprint: what ImageExampleGen would read, as one string

# Files beside the splits of an ingested Examples artifact; ImageEmbedder copies them into the embedded one.
LABELS_FILE = "labels.txt"                       # label vocabulary, one per line, sorted: line index == LABEL_KEY
REJECTS_FILE = "rejects.csv"                     # path,label,reason of every input that was skipped
INGESTION_SUMMARY_FILE = "ingestion_summary.json"  # counts per split, vocabulary, rejects by reason code
INGESTION_FILES = (LABELS_FILE, REJECTS_FILE, INGESTION_SUMMARY_FILE)
EMBEDDING_COUNTS_FILE = "embedding_counts.json"  # in the embedded Examples artifact: computed/cached/failed counts

TRAINING_SUMMARY_FILE = "training_summary.json"  # in the Trainer's model run folder

# The ModelReport artifact's files.
REPORT_METRICS_FILE = "metrics.json"
REPORT_HTML_FILE = "report.html"
REPORT_MARKDOWN_FILE = "report.md"
CONFUSION_MATRIX_FILE = "confusion_matrix.png"
MISCLASSIFIED_DIR = "misclassified"
LABEL_ISSUES_FILE = "label_issues.csv"  # every training image, least consistent with its given label first
LABEL_ISSUES_DIR = "label_issues"       # thumbnails of the top ones the report shows

# TFMA metric names: the eval config's SparseCategoricalAccuracy (blessing) and ExampleCount.
ACCURACY_METRIC_CLASS = "SparseCategoricalAccuracy"
ACCURACY_METRIC = "sparse_categorical_accuracy"
EXAMPLE_COUNT_METRIC = "example_count"

# Custom properties of the artifacts (readable in ML Metadata and the KFP UI).
LABEL_VOCABULARY_PROPERTY = "label_vocabulary"  # ingested Examples: JSON list of label names, index == LABEL_KEY
NUM_CLASSES_PROPERTY = "num_classes"
NUM_REJECTS_PROPERTY = "num_rejects"
NUM_EXAMPLES_PROPERTY_PREFIX = "num_examples_"  # + split name, e.g. num_examples_train
EMBEDDINGS_COMPUTED_PROPERTY = "embeddings_computed"  # embedded Examples
EMBEDDINGS_CACHED_PROPERTY = "embeddings_cached"
EMBEDDING_FAILURES_PROPERTY = "embedding_failures"
MODULE_HANDLE_PROPERTY = "module_handle"
BASELINE_SKIPPED_PROPERTY = "baseline_skipped_reason"  # ModelEvaluation, when the baseline's classes differ
# ModelReport's metrics output: the candidate's and the baseline's accuracy (absent when unknown), the test examples
# and the verdict (0/1); the same names are keys of its REPORT_METRICS_FILE (full precision; MLMD's SQLite store keeps
# 6 significant digits).
ACCURACY_PROPERTY = "accuracy"
BASELINE_ACCURACY_PROPERTY = "baseline_accuracy"
EXAMPLE_COUNT_PROPERTY = "example_count"
BLESSED_PROPERTY = "blessed"
# ModelReport's confusion_matrix output, in the layout of the KFP UI's confusion-matrix viewer.
CONFUSION_MATRIX_PROPERTY = "confusionMatrix"
# InfraBlessing of the load-and-query check (components/serving_validator): TFX InfraValidator's `blessed` (0/1, what
# the Pusher gates on) and the one-line reason when it is 0.
INFRA_BLESSED_PROPERTY = "blessed"
INFRA_REASON_PROPERTY = "reason"
# PushedModel: set by TFX's Pusher (`_MarkPushed`, private constants of tfx/components/pusher/executor.py), which
# AtomicPusher reuses.
PUSHED_PROPERTY = "pushed"
PUSHED_VERSION_PROPERTY = "pushed_version"
PUSHED_DESTINATION_PROPERTY = "pushed_destination"

# The Trainer hyperparameters a Kubeflow run may set at submit time (HyperparameterTrainer's exec properties), with
# their types: TFX's RuntimeParameter carries int, float and str only.
RUN_HYPERPARAMETERS = {"epochs": int, "fine_tune_epochs": int, "learning_rate": float, "fine_tune_learning_rate": float}

# Defaults the components and the pipeline settings (pipelines/configs.py) share.
DEFAULT_MODULE_HANDLE = "efficientnet_lite0"  # the builtin image module (image_retrain/image_module/builtin.py)
DEFAULT_SPLIT_RATIOS = (8, 1, 1)     # train, eval, test hash-bucket weights
DEFAULT_EMBEDDING_BATCH_SIZE = 32    # images per module call in the embedding stage
DEFAULT_MAX_MISCLASSIFIED = 48       # misclassified test images shown in the report
DEFAULT_MAX_LABEL_ISSUES = 48        # likely-mislabelled training images shown in the report (the CSV has them all)
