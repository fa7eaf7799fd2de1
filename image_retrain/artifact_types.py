"""The project's custom TFX artifact types (importing this module makes TFX decode them as their classes)."""
from __future__ import annotations

from tfx import types


class ModelReport(types.Artifact):
    """A folder with the contract's REPORT_* files, CONFUSION_MATRIX_FILE and MISCLASSIFIED_DIR/*.png."""
    TYPE_NAME = "image_retrain.ModelReport"  # KFP v2 wants <namespace>.<Title> for custom types
