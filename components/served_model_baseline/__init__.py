"""ServedModelBaseline: the currently served model version as the Evaluator's baseline.

The Kubeflow Pipelines v2 backend cannot run TFX resolver executors (LatestBlessedModelStrategy), so the KFP variant of
the pipeline compares a candidate with what TF Serving serves right now instead. Import the component from
`components.served_model_baseline.component` (kept out of this `__init__` so that importing the package stays cheap).
"""
