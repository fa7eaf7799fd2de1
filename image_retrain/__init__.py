"""The project's custom TFX artifact types under their KFP schema titles.

KFP schema titles must read `<namespace>.<Title>` (TFX's compiler_utils._SCHEMA_TITLE_RE), and TFX's container
entrypoint imports a custom type by its title as a Python class path. So `image_retrain.ModelReport` must be this
module's attribute, inside the image (Kubeflow Pipelines, Vertex AI) and wherever the project is installed.
"""
from components.model_report.component import ModelReportArtifact as ModelReport

__all__ = ["ModelReport"]
