"""The header check in the one decode step: sizes read from headers match what the decoders produce, and images that
claim too many pixels are refused before any pixel buffer is allocated."""
from __future__ import annotations

import io
import struct

import pytest
import tensorflow as tf
from image_fixtures import jpeg_header_bomb, png_bomb
from PIL import Image

from image_retrain.image_decoding import GIF_MAX_STEPS, MAX_IMAGE_PIXELS, claimed_size, decode_rgb


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def gif(screen=(10, 10), frames=((0, 0, 10, 10),), comment_sub_blocks: int = 0) -> bytes:
    """A GIF with a 2-colour palette; each frame (left, top, width, height) holds 2 bytes of LZW data."""
    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    if comment_sub_blocks:
        data += b"\x21\xfe" + b"\x01a" * comment_sub_blocks + b"\x00"
    for frame in frames:
        data += b"\x2c" + struct.pack("<HHHHB", *frame, 0) + b"\x02\x02\x4c\x01\x00"
    return data + b"\x3b"


@pytest.mark.parametrize("image_format,options", [("JPEG", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}),
                                                  ("WEBP", {}), ("WEBP", {"lossless": True})])
def test_claimed_size_matches_the_decoded_image(image_format, options):
    for mode in ("RGB", "RGBA") if image_format in ("PNG", "WEBP") else ("RGB",):
        data = encoded(Image.new(mode, (37, 21), (200, 10, 10)), image_format, **options)
        assert claimed_size(tf.constant(data)).numpy().tolist() == [21, 37, 777]
        assert decode_rgb(tf.constant(data)).shape == (21, 37, 3)


def test_claimed_size_of_odd_headers():
    top_down_bmp = bytearray(encoded(Image.new("RGB", (5, 7)), "BMP"))
    top_down_bmp[22:26] = struct.pack("<i", -7)
    assert claimed_size(tf.constant(bytes(top_down_bmp))).numpy().tolist() == [7, 5, 35]
    # giflib allocates for the largest frame, not the logical screen; every frame's raster is read.
    assert claimed_size(tf.constant(gif(frames=[(0, 0, 4000, 3000)]))).numpy().tolist() == [3000, 4000, 12_000_000]
    assert claimed_size(tf.constant(gif(frames=[(0, 0, 10, 10)] * 3))).numpy().tolist() == [10, 10, 300]
    for too_short in (b"", b"GIF89a", b"\x89PNG", b"BM12", b"RIFFxxxxWEBP"):
        assert claimed_size(tf.constant(too_short)).numpy().tolist() == [0, 0, 0]


@pytest.mark.parametrize("data,words", [
    (png_bomb(), "Image of 23000x23000 (529000000 pixels to decode)"),
    (jpeg_header_bomb(), "Image of 13000x13000 (169000000 pixels to decode)"),
    (gif(screen=(10, 10), frames=[(0, 0, 20000, 20000)]), "Image of 20000x20000 (400000000 pixels to decode)"),
    (gif(comment_sub_blocks=GIF_MAX_STEPS + 10), f"GIF with more than {GIF_MAX_STEPS} blocks"),
], ids=["png_23000", "jpeg_header_13000", "gif_hidden_frame", "gif_too_many_blocks"])
def test_bombs_are_refused_from_the_header(data, words):
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"limit of 100000000 pixels|too many to check") as error:
        decode_rgb(tf.constant(data))
    assert words in error.value.message
    assert MAX_IMAGE_PIXELS == 100_000_000


def test_ingestion_rejects_with_the_same_check():
    from components.image_example_gen import validation as v

    limits = v.ValidationLimits()
    for data, code in ((png_bomb(), v.TOO_MANY_PIXELS), (gif(comment_sub_blocks=GIF_MAX_STEPS + 10), v.TOO_MANY_PIXELS),
                       (b"\xff\xd8\xff\xe0" + b"\0" * 10, v.UNDECODABLE)):
        with pytest.raises(v.ImageRejected) as rejected:
            v.check_image_bytes(data, limits)
        assert rejected.value.code == code
    # A real GIF with a comment of 100 one-byte sub-blocks inserted before its frame is walked and accepted.
    real = encoded(Image.new("P", (10, 10)), "GIF")
    frame_start = 13 + (3 * 2 ** ((real[10] & 7) + 1) if real[10] & 0x80 else 0)
    commented = real[:frame_start] + b"\x21\xfe" + b"\x01a" * 100 + b"\x00" + real[frame_start:]
    assert v.check_image_bytes(commented, limits).width == 10
