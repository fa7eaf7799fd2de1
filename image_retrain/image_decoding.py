"""The one image decode + resize used by ingestion validation, the embedding stage and the serving signature.

Training and serving must see identical pixels, so every stage decodes with TensorFlow's own decoders (the ones the
exported SavedModel runs), never with PIL.

Decompression bombs: a few KB of PNG or a JPEG header alone can claim 23000x23000 pixels, which TensorFlow's decoders
would allocate (up to their own 2^29-pixel cap). `decode_rgb` reads the dimensions from the headers first and refuses
images over `MAX_IMAGE_PIXELS` (image_retrain/image_limits.py) before any pixel buffer exists. The check is graph ops,
so it is part of the exported SavedModel and holds in any server that runs it (the real tensorflow_model_server too): a
refused image is the INVALID_ARGUMENT of a failed tf.debugging assertion, with a message naming the limit.
"""
from __future__ import annotations

import tensorflow as tf

from image_retrain.image_limits import MAX_IMAGE_PIXELS

# Formats tf.io.decode_image reads; anything else is rejected at ingestion with this list in the reason.
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP")

# Enough leading bytes for every fixed-position size field read below.
_HEADER_BYTES = 32
# GIF block walk: at most this many steps, each ~40-80 us of graph ops (so well under 0.3 s of CPU per image). A frame
# takes a few steps (full 255-byte sub-blocks are skipped up to 512 at a time), so animations of up to ~1000 frames
# pass; a GIF needing more steps (more frames, or thousands of tiny sub-blocks) is refused: unchecked, it could hide a
# huge frame.
GIF_MAX_STEPS = 4096
_GIF_SKIP_SUB_BLOCKS = 512


def _fixed_header_size(magic: tf.Tensor) -> tf.Tensor:
    """[height, width] from the fixed header fields of PNG, BMP and WebP (magic: the first _HEADER_BYTES bytes);
    [0, 0] for anything else. Few ops on purpose: this runs for every image."""
    head = tf.cast(tf.io.decode_raw(magic, tf.uint8), tf.int64)

    def fields(offset: int, size: int, count: int = 2, big_endian: bool = False) -> tf.Tensor:
        """`count` consecutive unsigned integers of `size` bytes at `offset`, as int64 [count]."""
        weights = tf.constant([256**i for i in (range(size - 1, -1, -1) if big_endian else range(size))], tf.int64)
        return tf.reduce_sum(tf.reshape(head[offset:offset + size * count], [count, size]) * weights, axis=1)

    def starts_with(prefix: bytes, offset: int = 0):
        return tf.equal(tf.strings.substr(magic, offset, len(prefix)), prefix)

    # PNG: IHDR (always the first chunk) holds big-endian uint32 width, height at byte 16.
    png = fields(16, 4, big_endian=True)
    # BMP: BITMAPINFOHEADER int32 width, height at 18 (a negative height means top-down rows).
    bmp = fields(18, 4)
    bmp = tf.abs(tf.where(bmp >= 2**31, bmp - 2**32, bmp))
    # WebP (RIFF....WEBP, first chunk at 12): VP8X canvas size - 1 as 24-bit at 24; VP8L size - 1 as two 14-bit
    # fields packed at 21; VP8 (lossy) 14-bit width, height at 26.
    vp8l = fields(21, 4, count=1)[0]
    webp = tf.where(starts_with(b"VP8X", 12), fields(24, 3) + 1,
                    tf.where(starts_with(b"VP8L", 12), tf.stack([vp8l % 2**14, (vp8l // 2**14) % 2**14]) + 1,
                             fields(26, 2) % 2**14))
    is_webp = tf.logical_and(starts_with(b"RIFF"), starts_with(b"WEBP", 8))
    width_height = tf.where(starts_with(b"\x89PNG\r\n\x1a\n"), png,
                            tf.where(starts_with(b"BM"), bmp, tf.where(is_webp, webp, tf.zeros([2], tf.int64))))
    return tf.reverse(width_height, [0])


@tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
def _gif_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """GIF -> int64 [height, width, pixels] of what TensorFlow's GIF decoder allocates.

    The decoder (giflib's DGifSlurp) reads every frame's raster, W x H bytes each, and its output is as large as the
    largest frame (not the logical screen in the header), so a tiny screen can hide a huge frame and many frames add
    up. The block structure is walked here (image descriptors and sub-block lengths only, no LZW decoding); `pixels`
    is the larger of the output canvas and the sum of all frames; -1 when the walk needs more than GIF_MAX_STEPS.
    """
    data = tf.cast(tf.io.decode_raw(image_bytes, tf.uint8), tf.int64)
    n = tf.size(data, out_type=tf.int64)

    def at(i):
        return tf.gather(data, tf.clip_by_value(tf.cast(i, tf.int64), 0, n - 1))

    def color_table_bytes(flags):
        return tf.where(flags >= 128, 3 * tf.bitwise.left_shift(tf.constant(2, tf.int64), flags % 8), 0)

    # Loop state: position, inside sub-blocks?, done?, widest frame, tallest frame, sum of frame pixels. Each step
    # either reads one block header, or (inside a block's data) skips every full 255-byte sub-block at once and then
    # one more sub-block, so a frame costs a few steps however long its data.
    start = 13 + color_table_bytes(at(10))
    zero = tf.constant(0, tf.int64)
    strides = 256 * tf.range(_GIF_SKIP_SUB_BLOCKS, dtype=tf.int64)

    def step(pos, in_blocks, done, width, height, total):
        size_bytes = pos + strides
        # The first sub-block that is not full (or the last of this window, when all are).
        not_full = tf.concat([tf.logical_or(size_bytes >= n, tf.not_equal(at(size_bytes), 255))[:-1], [True]], 0)
        last = pos + 256 * tf.argmax(tf.cast(not_full, tf.int32), output_type=tf.int64)
        size = at(last)
        kind = at(pos)
        frame_w = at(pos + 5) + 256 * at(pos + 6)
        frame_h = at(pos + 7) + 256 * at(pos + 8)
        is_frame = tf.logical_and(~in_blocks, tf.equal(kind, 0x2C))
        is_extension = tf.logical_and(~in_blocks, tf.equal(kind, 0x21))
        block_end = tf.where(is_frame, pos + 11 + color_table_bytes(at(pos + 9)), pos + 2)
        return (tf.where(in_blocks, last + 1 + size, block_end),
                tf.where(in_blocks, size > 0, is_frame | is_extension),
                tf.logical_and(~in_blocks, ~(is_frame | is_extension)),
                tf.where(is_frame, tf.maximum(width, frame_w), width),
                tf.where(is_frame, tf.maximum(height, frame_h), height),
                tf.where(is_frame, total + frame_w * frame_h, total))

    pos, _, done, width, height, total = tf.while_loop(
        lambda pos, in_blocks, done, *_: tf.logical_and(pos < n, ~done), step,
        (start, tf.constant(False), tf.constant(False), zero, zero, zero), maximum_iterations=GIF_MAX_STEPS)
    finished = tf.logical_or(done, pos >= n)
    return tf.stack([height, width, tf.where(finished, tf.maximum(width * height, total), -1)])


def claimed_size(image_bytes: tf.Tensor) -> tf.Tensor:
    """Encoded image (scalar string) -> int64 [height, width, pixels] as its headers claim, decoding no pixels.

    JPEG via tf.io.extract_jpeg_shape (libjpeg reads the markers only), GIF by walking its blocks, PNG, BMP and WebP
    from fixed header fields. Unknown formats and headers too short to hold the fields give zeros: the decoder then
    has the final word. pixels is -1 for a GIF with too many blocks to check (see GIF_MAX_STEPS).
    """
    prefix = tf.strings.substr(image_bytes, 0, _HEADER_BYTES)
    magic = tf.strings.substr(tf.strings.join([prefix, tf.constant(b"\0" * _HEADER_BYTES)]), 0, _HEADER_BYTES)

    def with_pixels(size):
        size = tf.where(tf.strings.length(prefix) >= _HEADER_BYTES, size, tf.zeros([2], tf.int64))
        return tf.concat([size, [size[0] * size[1]]], 0)

    def jpeg():
        return with_pixels(tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64))

    def other():
        return tf.cond(tf.equal(tf.strings.substr(magic, 0, 3), b"GIF"), lambda: _gif_size(image_bytes),
                       lambda: with_pixels(_fixed_header_size(magic)))

    return tf.cond(tf.equal(tf.strings.substr(magic, 0, 3), b"\xff\xd8\xff"), jpeg, other)


def check_pixel_limit(image_bytes: tf.Tensor, max_pixels: int = MAX_IMAGE_PIXELS) -> tf.Operation:
    """An assertion op failing with INVALID_ARGUMENT when the headers claim more than `max_pixels` pixels (or, for a
    GIF, its blocks are too many to check)."""
    height, width, pixels = tf.unstack(claimed_size(image_bytes))
    message = tf.where(pixels < 0, f"GIF with more than {GIF_MAX_STEPS} blocks: too many to check its size before "
                                   "decoding", tf.strings.format("Image of {}x{} ({} pixels to decode) is larger than "
                                                                 f"the limit of {max_pixels} pixels",
                                                                 (width, height, pixels)))
    return tf.debugging.Assert(tf.logical_and(pixels >= 0, pixels <= max_pixels), [message])


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
