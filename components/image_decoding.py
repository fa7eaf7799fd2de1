"""The one image decode + resize used by ingestion validation, the embedding stage and the serving signature.

Training and serving must see identical pixels, so every stage decodes with TensorFlow's own decoders (the ones the
exported SavedModel runs), never with PIL.

Decompression bombs: a few KB of PNG or a JPEG header alone can claim 23000x23000 pixels, which TensorFlow's decoders
would allocate (up to their own 2^29-pixel cap). `decode_rgb` reads the dimensions from the headers first and refuses
images over `MAX_IMAGE_PIXELS` (components/image_limits.py) before any pixel buffer exists. The check is graph ops, so
it is part of the exported SavedModel and holds in any server that runs it (the real tensorflow_model_server too): a
refused image is the INVALID_ARGUMENT of a failed tf.debugging assertion, with a message naming the limit.
"""
from __future__ import annotations

import tensorflow as tf

from components.image_limits import MAX_IMAGE_PIXELS

# Formats tf.io.decode_image reads; anything else is rejected at ingestion with this list in the reason.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP")

# Enough leading bytes for every fixed-position size field read below.
_HEADER_BYTES = 32


def _uint(head: tf.Tensor, offset: int, size: int, big_endian: bool = False) -> tf.Tensor:
    """Bytes head[offset:offset+size] (int64 byte values) as one unsigned int64."""
    value = tf.constant(0, tf.int64)
    order = range(offset, offset + size) if big_endian else range(offset + size - 1, offset - 1, -1)
    for i in order:
        value = value * 256 + head[i]
    return value


def _fixed_header_size(head: tf.Tensor, magic: tf.Tensor) -> tf.Tensor:
    """[height, width] from the fixed header fields of PNG, BMP and WebP (head: int64 [_HEADER_BYTES]); else [0, 0]."""
    def starts_with(prefix: bytes, offset: int = 0):
        return tf.equal(tf.strings.substr(magic, offset, len(prefix)), prefix)

    # PNG: IHDR (always the first chunk) holds big-endian uint32 width, height at bytes 16, 20.
    png = tf.stack([_uint(head, 20, 4, True), _uint(head, 16, 4, True)])
    # BMP: BITMAPINFOHEADER int32 width, height at 18, 22 (a negative height means top-down rows).
    bmp_w, bmp_h = _uint(head, 18, 4), _uint(head, 22, 4)
    bmp = tf.abs(tf.where(tf.stack([bmp_h, bmp_w]) >= 2**31, tf.stack([bmp_h, bmp_w]) - 2**32,
                          tf.stack([bmp_h, bmp_w])))
    # WebP (RIFF....WEBP + first chunk at 12): VP8X canvas size-1 as 24-bit at 24, 27; VP8L size-1 as 14-bit fields
    # packed at 21; VP8 (lossy) 14-bit width, height at 26, 28.
    vp8x = tf.stack([_uint(head, 27, 3) + 1, _uint(head, 24, 3) + 1])
    vp8l_bits = _uint(head, 21, 4)
    vp8l = tf.stack([(vp8l_bits // 2**14) % 2**14 + 1, vp8l_bits % 2**14 + 1])
    vp8 = tf.stack([_uint(head, 28, 2) % 2**14, _uint(head, 26, 2) % 2**14])
    webp = tf.where(starts_with(b"VP8X", 12), vp8x, tf.where(starts_with(b"VP8L", 12), vp8l, vp8))
    is_webp = tf.logical_and(starts_with(b"RIFF"), starts_with(b"WEBP", 8))
    zero = tf.zeros([2], tf.int64)
    return tf.where(starts_with(b"\x89PNG\r\n\x1a\n"), png,
                    tf.where(starts_with(b"BM"), bmp, tf.where(is_webp, webp, zero)))


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def _gif_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """GIF -> int64 [height, width, pixels] of what TensorFlow's GIF decoder allocates.

    The decoder (giflib's DGifSlurp) reads every frame's raster, W x H bytes each, and its output is as large as the
    largest frame (not the logical screen in the header), so a tiny screen can hide a huge frame and many frames add
    up. The block structure is walked here (image descriptors and sub-block lengths only, no LZW decoding); `pixels`
    is the larger of the output canvas and the sum of all frames.
    """
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int64)
    n = tf.size(data, out_type=tf.int64)

    def at(i):
        return tf.gather(data, tf.clip_by_value(tf.cast(i, tf.int64), 0, n - 1))

    def color_table_bytes(flags):
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)

    # Loop state: position, inside sub-blocks?, done?, widest frame, tallest frame, sum of frame pixels.
    start = 13 + color_table_bytes(at(10))
    zero = tf.constant(0, tf.int64)

    def step(pos, in_blocks, done, width, height, total):
        def sub_block():
            size = at(pos)
            return pos + 1 + size, size > 0, done, width, height, total

        def block():
            kind = at(pos)
            frame_w = at(pos + 5) + 256 * at(pos + 6)
            frame_h = at(pos + 7) + 256 * at(pos + 8)
            is_frame = tf.equal(kind, 0x2C)
            is_extension = tf.equal(kind, 0x21)
            next_pos = tf.where(is_frame, pos + 11 + color_table_bytes(at(pos + 9)), pos + 2)
            return (next_pos, is_frame | is_extension, ~(is_frame | is_extension),
                    tf.where(is_frame, tf.maximum(width, frame_w), width),
                    tf.where(is_frame, tf.maximum(height, frame_h), height),
                    tf.where(is_frame, total + frame_w * frame_h, total))

        return tf.cond(in_blocks, sub_block, block)

    _, _, _, width, height, total = tf.while_loop(
        lambda pos, in_blocks, done, *_: tf.logical_and(pos < n, ~done), step,
        (start, tf.constant(False), tf.constant(False), zero, zero, zero))
    return tf.stack([height, width, tf.maximum(width * height, total)])


def claimed_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded image (scalar string) -> int64 [height, width, pixels] as its headers claim, decoding no pixels.

    JPEG via tf.io.extract_jpeg_shape (libjpeg reads the markers only), GIF by walking its blocks, PNG, BMP and WebP
    from fixed header fields. Unknown formats and headers too short to hold the fields give zeros: the decoder then
    has the final word.
    """
    prefix = tf.strings.substr(image_bytes, 0, _HEADER_BYTES)
    magic = tf.strings.substr(tf.strings.join([prefix, tf.constant(b"\0" * _HEADER_BYTES)]), 0, _HEADER_BYTES)
    head = tf.cast(tf.io.decode_raw(magic, tf.uint8), tf.int64)

    def with_pixels(size):
        size = tf.where(tf.strings.length(prefix) >= _HEADER_BYTES, size, tf.zeros([2], tf.int64))
        return tf.concat([size, [size[0] * size[1]]], 0)

    def jpeg():
        return with_pixels(tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64))

    def other():
        return tf.cond(tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), lambda: _gif_size(image_bytes),
                       lambda: with_pixels(_fixed_header_size(head, magic)))

    return tf.cond(tf.equal(tf.strings.substr(magic, 0, 3), b"\xff\xd8\xff"), jpeg, other)


def check_pixel_limit(image_bytes: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Operation:
    """An assertion op failing with INVALID_ARGUMENT when the headers claim more than `max_pixels` pixels."""
    height, width, pixels = tf.unstack(claimed_size(image_bytes))
    message = tf.strings.format("Image of {}x{} ({} pixels to decode) is larger than the limit of " + str(max_pixels)
                                + " pixels", (width, height, pixels))
    return tf.debugging.Assert(pixels <= max_pixels, [message])


def decode_rgb(image_bytes: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP bytes (scalar string) -> uint8 [H, W, 3]; first frame of animations.

    Images whose headers claim more than `max_pixels` pixels are refused before decoding (see the module doc).
    """
    with tf.control_dependencies([check_pixel_limit(image_bytes, max_pixels)]):
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def to_model_input(image: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """uint8 [H, W, 3] -> float32 [h, w, 3] in [0, 1], the TF Hub image-module input convention."""
    image = tf.image.convert_image_dtype(image, tf.float32)
    return tf.image.resize(image, size, method="bilinear", antialias=True)


def preprocess_batch(image_bytes: tf.Tensor, size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Tensor:
    """String [B] of encoded images -> float32 [B, h, w, 3] in [0, 1]."""
    return tf.map_fn(
        lambda b: to_model_input(decode_rgb(b, max_pixels), size),
        image_bytes,
        fn_output_signature=tf.TensorSpec([size[0], size[1], 3], tf.float32),
    )
