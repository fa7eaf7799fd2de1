"""Errors raised when an image module cannot be resolved, converted or loaded."""
from __future__ import annotations


class ImageModuleError(RuntimeError):
    """An image-module handle could not be turned into a usable module; the message says why and what to do."""
