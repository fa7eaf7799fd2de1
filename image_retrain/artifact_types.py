"""The project's custom TFX artifact types (importing this module makes TFX decode them as their classes)."""
from __future__ import annotations

from tfx import types


class ModelReport(types.Artifact):
    """A folder with the contract's REPORT_* files, CONFUSION_MATRIX_FILE and MISCLASSIFIED_DIR/*.png."""
    TYPE_NAME = "image_retrain.ModelReport"  # KFP v2 wants <namespace>.<Title> for custom types


# Kubeflow Pipelines' own types, under their KFP schema titles: the KFP UI renders an output by its MLMD type name,
# which the launcher takes from the title (frontend/src/components/viewers/MetricsVisualizations.tsx,
# backend/src/v2/metadata/client.go RecordArtifact).
class Metrics(types.Artifact):
    """Scalar metrics as custom properties: every one is a row of the UI's "Scalar Metrics" table."""
    TYPE_NAME = "system.Metrics"


class ClassificationMetrics(types.Artifact):
    """A `confusionMatrix` custom property: {annotationSpecs: [{displayName}], rows: [{row: [...]}]}."""
    TYPE_NAME = "system.ClassificationMetrics"


class HTML(types.Artifact):
    """One self-contained HTML file at the URI itself (the UI fetches that single object into a sandboxed iframe)."""
    TYPE_NAME = "system.HTML"


class Markdown(types.Artifact):
    """One Markdown file at the URI itself (the UI fetches that single object)."""
    TYPE_NAME = "system.Markdown"


# TFX's container entrypoint imports a custom type by its schema title as a class path
# (kubeflow_v2_entrypoint_utils._retrieve_class_path); KFP's titles name no Python module, so the project's entrypoint
# maps them to these classes.
CLASS_PATH_BY_KFP_TITLE = {kind.TYPE_NAME: f"{__name__}.{kind.__name__}"
                           for kind in (Metrics, ClassificationMetrics, HTML, Markdown)}
