"""The code the pipeline's stages share: their contract, image decoding and limits, the image module, LiteRT conversion.

Also the home of the custom artifact types under their KFP schema titles: KFP schema titles read `<namespace>.<Title>`
(TFX's compiler_utils._SCHEMA_TITLE_RE), and TFX's container entrypoint imports a custom type by its title as a
Python class path, so `image_retrain.ModelReport` must be an attribute of this package. It is resolved on first use
(PEP 562): importing the package, as every stage does for its contract, does not import TFX.
"""


def __getattr__(name: str):
    if name == "ModelReport":
        from image_retrain.artifact_types import ModelReport  # noqa: PLC0415 - lazy: TFX only when asked for

        return ModelReport
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
