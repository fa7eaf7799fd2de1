"""How many pixels an encoded image will decode to, read from its header by Pillow's format plugins (no pixel is
decoded): what a request's images will cost once the model decodes them.

Image.open would do the same, but fails on a header it finds unreadable only after trying every format; the plugins
are called directly instead, in Image.open's way (each format's `accept` on the first bytes, then its header parser).
An image over Pillow's decompression-bomb bound (2 x Image.MAX_IMAGE_PIXELS, also for a GIF frame larger than its
screen) has no size from Pillow, only that bound: `claimed_pixels` says None.
"""
from __future__ import annotations

import io
import struct

from PIL import Image

# The formats TensorFlow's decode_image reads (WebP through tf.io.decode_webp in the exported graph's checks).
DECODED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
# Cheap first filter (one C-level call per value): the leading bytes of those formats.
MAGIC_PREFIXES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"RIFF")
BOMB_PIXELS = 2 * Image.MAX_IMAGE_PIXELS
_PREFIX_BYTES = 16  # what Image.open hands to the plugins' accept()
_HEADER_ERRORS = (SyntaxError, IndexError, TypeError, ValueError, struct.error, OSError, EOFError)


def _plugins() -> list[tuple]:
    Image.init()
    return [Image.OPEN[name] for name in DECODED_FORMATS if name in Image.OPEN]


_PLUGINS = _plugins()


def looks_like_an_image(value: bytes) -> bool:
    return value.startswith(MAGIC_PREFIXES)


def claimed_pixels(value: bytes) -> int | None:
    """Width x height as the header claims (for a GIF, its largest frame); 0 for anything that is not an image of a
    decoded format or whose header does not parse (the decoder will refuse it without allocating); None when it
    claims more than BOMB_PIXELS."""
    if not looks_like_an_image(value):
        return 0
    prefix = value[:_PREFIX_BYTES]
    for factory, accept in _PLUGINS:
        if accept is not None and not accept(prefix):
            continue
        try:
            width, height = factory(io.BytesIO(value), None).size
        except Image.DecompressionBombError:
            return None
        except _HEADER_ERRORS:
            continue
        return width * height
    return 0
