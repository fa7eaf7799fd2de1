"""Per-file checks of image ingestion: can this file be read, and does TensorFlow decode it like serving will?

A file is usable when it is a non-empty regular file, its content is one of `SUPPORTED_FORMATS` (sniffed from the
magic bytes, not the file name), its header does not claim more than `max_pixels`, `decode_rgb` (the decoder the
embedding stage and the served model run) decodes it, and both sides are at least `min_side` pixels.

Accepted on purpose, because `decode_rgb` decodes them exactly as serving will: PNG with alpha (alpha dropped),
16-bit PNG (scaled to 8 bits), grayscale and CMYK JPEG, palette and animated GIF (first frame). EXIF orientation is
ignored by TensorFlow's decoders in training and in serving alike, so the two agree on the pixels.

Every rejection raises `ImageRejected` whose reason reads '<code>: <detail>' (codes below), so reports can be
grouped by code and still say precisely what was wrong.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import os
import re
import stat
from dataclasses import dataclass

from image_retrain.image_limits import MAX_IMAGE_PIXELS
from image_retrain.paths import is_uri

# Reason codes used in rejects.csv.
MISSING_FILE = "missing_file"
SYMLINK_LOOP = "symlink_loop"
NOT_REGULAR_FILE = "not_regular_file"
UNREADABLE = "unreadable"
EMPTY_FILE = "empty_file"
FILE_TOO_LARGE = "file_too_large"
UNSUPPORTED_FORMAT = "unsupported_format"
TOO_MANY_PIXELS = "too_many_pixels"
UNDECODABLE = "undecodable"
TOO_SMALL = "too_small"
DUPLICATE_CONFLICTING_LABELS = "duplicate_conflicting_labels"
DUPLICATE_SAME_LABEL = "duplicate_same_label"
CHANGED_DURING_INGESTION = "changed_during_ingestion"
EMPTY_CLASS = "empty_class"
CLASS_WITHOUT_USABLE_IMAGES = "class_without_usable_images"
NOT_IN_CLASS_FOLDER = "not_in_class_folder"
INVALID_NAME = "invalid_name"
INVALID_MANIFEST_ROW = "invalid_manifest_row"
LINK_OUTSIDE_DATA_ROOT = "link_outside_data_root"
PATH_OUTSIDE_MANIFEST = "path_outside_manifest"
IMAGE_NAMED_FOLDER = "image_named_folder"

DEFAULT_MIN_SIDE = 2  # 1-pixel-wide images carry no shape information; sklearn's 8x8 digits must still pass.
DEFAULT_MAX_PIXELS = MAX_IMAGE_PIXELS  # the served model's limit: what ingestion accepts, serving decodes.
MAX_FILE_BYTES = 256 * 1024 * 1024


class ImageRejected(Exception):
    """The file cannot become an example; str(exc) is the '<code>: <detail>' reason."""

    def __init__(self, code: str, detail: str):
        super().__init__(f"{code}: {detail}")
        self.code = code


@dataclass(frozen=True)
class ValidationLimits:
    min_side: int = DEFAULT_MIN_SIDE
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_file_bytes: int = MAX_FILE_BYTES


@dataclass(frozen=True)
class ClaimedImage:
    """What an image's headers claim, before any pixel is decoded."""

    image_format: str
    height: int
    width: int
    pixels: int


@dataclass(frozen=True)
class CheckedImage:
    image_format: str
    height: int
    width: int


def sniff_format(head: bytes) -> str:
    """Names the container format from the first bytes; 'unknown' when nothing matches."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head.startswith(b"BM"):
        return "BMP"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if head[4:8] == b"ftyp":
        return "HEIF/AVIF (ISO media)"
    if head.startswith(b"%PDF"):
        return "PDF"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    if text.lstrip().startswith("<svg") or "<svg" in text:
        return "SVG"
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        return "text"
    return "unknown"


def read_file_bytes(location: str, limits: ValidationLimits) -> bytes:
    """Reads a whole file, turning every way it can be unusable into an `ImageRejected` with a clear reason."""
    if is_uri(location):  # Object stores (gs://, s3://): no symlinks or FIFOs to worry about.
        return _read_remote(location, limits)
    try:
        info = os.stat(location)  # follows symlinks: what matters is what a reader would get
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ImageRejected(SYMLINK_LOOP, f"symbolic links point at each other ({exc.strerror})") from None
        if exc.errno == errno.ENOENT:
            if os.path.islink(location):
                raise ImageRejected(MISSING_FILE,
                                    f"dangling symbolic link to {os.readlink(location)!r}") from None
            raise ImageRejected(MISSING_FILE, "no such file") from None
        raise ImageRejected(UNREADABLE, f"cannot stat: {exc.strerror}") from None
    mode = info.st_mode
    if not stat.S_ISREG(mode):
        kind = ("a directory" if stat.S_ISDIR(mode) else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
                else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "not a regular file")
        # Never open() these: reading a FIFO blocks forever.
        raise ImageRejected(NOT_REGULAR_FILE, f"is {kind}")
    _check_size(info.st_size, limits)
    try:
        with open(location, "rb") as f:
            data = f.read(limits.max_file_bytes + 1)
    except OSError as exc:
        raise ImageRejected(UNREADABLE, f"cannot read: {exc.strerror}") from None
    _check_size(len(data), limits)
    return data


def _read_remote(location: str, limits: ValidationLimits) -> bytes:
    import tensorflow as tf  # noqa: PLC0415 - only reading and decoding need TF; the limits and CLI checks run without it

    try:
        if not tf.io.gfile.exists(location):
            raise ImageRejected(MISSING_FILE, "no such file")
        if tf.io.gfile.isdir(location):
            raise ImageRejected(NOT_REGULAR_FILE, "is a directory")
        _check_size(tf.io.gfile.stat(location).length, limits)
        with tf.io.gfile.GFile(location, "rb") as f:
            data = f.read()
    except tf.errors.OpError as exc:
        raise ImageRejected(UNREADABLE, f"cannot read: {exc.message}") from None
    _check_size(len(data), limits)
    return data


def _check_size(size: int, limits: ValidationLimits) -> None:
    if size == 0:
        raise ImageRejected(EMPTY_FILE, "file is 0 bytes")
    if size > limits.max_file_bytes:
        raise ImageRejected(FILE_TOO_LARGE, f"file is larger than {limits.max_file_bytes} bytes")


_TF_MESSAGE_NOISE = re.compile(r"\{\{[^}]*\}\}|\[Op:[^\]]*\]|name: ?$")


def clean_tf_message(message: str) -> str:
    """A TensorFlow error message without its graph-node and op annotations: the part that says what was wrong."""
    lines = [_TF_MESSAGE_NOISE.sub("", line).strip() for line in message.splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("[[")) or "decoder error"


def decode_errors() -> tuple[type[Exception], ...]:
    """The TensorFlow errors a decode fails with: a corrupt file, or decode_rgb's pixel-limit assertion."""
    import tensorflow as tf  # noqa: PLC0415 - only reading and decoding need TF; the limits and CLI checks run without it

    return tf.errors.InvalidArgumentError, tf.errors.UnknownError, tf.errors.DataLossError


@functools.cache
def _compiled(function_name: str, max_pixels: int | None = None):
    """`image_decoding.<function_name>` as one traced graph per process (and pixel limit): run eagerly, its conds and
    loops cost a Python dispatch per op, several milliseconds a file; traced, one call."""
    import tensorflow as tf  # noqa: PLC0415 - only reading and decoding need TF; the limits and CLI checks run without it

    from image_retrain import image_decoding  # noqa: PLC0415 - imports TF

    function = getattr(image_decoding, function_name)
    return tf.function(function if max_pixels is None else functools.partial(function, max_pixels=max_pixels),
                       input_signature=[tf.TensorSpec([], tf.string)])


def check_header(data: bytes, limits: ValidationLimits) -> ClaimedImage:
    """The checks that decode no pixel: a supported format (sniffed from the bytes) whose headers, read as the served
    model reads them, claim at most `limits.max_pixels` pixels. A decompression bomb costs nothing past this."""
    import tensorflow as tf  # noqa: PLC0415 - only reading and decoding need TF; the limits and CLI checks run without it

    from image_retrain.image_decoding import GIF_MAX_STEPS, SUPPORTED_FORMATS  # noqa: PLC0415 - imports TF

    if not data:
        raise ImageRejected(EMPTY_FILE, "file is 0 bytes")
    image_format = sniff_format(data[:64])
    if image_format not in SUPPORTED_FORMATS:
        raise ImageRejected(UNSUPPORTED_FORMAT,
                            f"content is {image_format}, supported: {', '.join(SUPPORTED_FORMATS)}")
    try:
        claimed = _compiled("claimed_size")(tf.constant(data)).numpy()
        claimed_height, claimed_width, claimed_pixels = (int(x) for x in claimed)
    except decode_errors() as exc:
        raise ImageRejected(UNDECODABLE, f"TensorFlow cannot decode this {image_format}: "
                                         f"{clean_tf_message(exc.message)}") from None
    if claimed_pixels < 0:
        raise ImageRejected(TOO_MANY_PIXELS, f"GIF with more than {GIF_MAX_STEPS} blocks: too many to check its "
                                             "size before decoding")
    if claimed_pixels > limits.max_pixels:
        raise ImageRejected(TOO_MANY_PIXELS, f"{claimed_width}x{claimed_height}: {claimed_pixels} pixels to "
                                             f"decode, more than the limit of {limits.max_pixels}")
    return ClaimedImage(image_format, claimed_height, claimed_width, claimed_pixels)


def check_image_bytes(data: bytes, limits: ValidationLimits) -> CheckedImage:
    """Validates encoded image bytes by decoding them with the pipeline's own `decode_rgb`, after `check_header`."""
    import tensorflow as tf  # noqa: PLC0415 - only reading and decoding need TF; the limits and CLI checks run without it

    image_format = check_header(data, limits).image_format
    try:
        pixels = _compiled("decode_rgb", limits.max_pixels)(tf.constant(data))
    except decode_errors() as exc:
        raise ImageRejected(UNDECODABLE, f"TensorFlow cannot decode this {image_format}: "
                                         f"{clean_tf_message(exc.message)}") from None
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    _check_pixels(width, height, limits)
    if min(height, width) < limits.min_side:
        raise ImageRejected(TOO_SMALL, f"{width}x{height} pixels, each side must be at least {limits.min_side}")
    return CheckedImage(image_format, height, width)


def _check_pixels(width: int, height: int, limits: ValidationLimits) -> None:
    if width * height > limits.max_pixels:
        raise ImageRejected(TOO_MANY_PIXELS, f"{width}x{height} = {width * height} pixels, "
                                             f"more than the limit of {limits.max_pixels}")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
