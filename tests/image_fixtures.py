"""Generated image data sets for tests: an easily separable shapes set, and a corpus of awkward and broken inputs.

Everything is drawn with PIL at test time (no binary fixtures in the repo). Both builders are deterministic for a
given seed, so file bytes (and therefore sha256 and splits) are reproducible.
"""
from __future__ import annotations

import io
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from image_retrain.image_decoding import SUPPORTED_FORMATS

# Each class gets its own shape AND colour family, so even a small linear head on generic embeddings separates them.
_SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
_COLOURS = ((220, 40, 40), (40, 90, 220), (40, 170, 60), (230, 170, 20), (150, 60, 200), (20, 180, 190))


def draw_shape(shape: str, colour: tuple[int, int, int], rng: random.Random, size: int = 96) -> Image.Image:
    """One `shape` in a jittered `colour` on a light random background, at a random position and scale."""
    background = tuple(rng.randint(215, 255) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    fill = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in colour)
    radius = rng.randint(size // 5, size // 3)
    cx, cy = (rng.randint(radius + 2, size - radius - 2) for _ in range(2))
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
    elif shape == "cross":
        bar = max(3, radius // 3)
        draw.rectangle((cx - radius, cy - bar, cx + radius, cy + bar), fill=fill)
        draw.rectangle((cx - bar, cy - radius, cx + bar, cy + radius), fill=fill)
    elif shape == "ring":
        draw.ellipse(box, outline=fill, width=max(3, radius // 3))
    elif shape == "diamond":
        draw.polygon([(cx, cy - radius), (cx + radius, cy), (cx, cy + radius), (cx - radius, cy)], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {_SHAPES}")
    return image


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def make_shapes_dataset(root, n_per_class: int = 20, classes=("circle", "square", "triangle"), seed: int = 0,
                        start_index: int = 0) -> dict[str, list[Path]]:
    """Writes `<root>/<class>/<class>_<i>.{jpg,png}` (alternating JPEG/PNG), returns {class: [paths]}.

    Known shape names draw that shape; any other class name gets a shape by position. `start_index` lets a test
    add more files to an existing set without overwriting any (different seed stream per index).
    """
    root = Path(root)
    written: dict[str, list[Path]] = {}
    for class_index, name in enumerate(classes):
        shape = name if name in _SHAPES else _SHAPES[class_index % len(_SHAPES)]
        colour = _COLOURS[_SHAPES.index(shape) % len(_COLOURS)]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for i in range(start_index, start_index + n_per_class):
            rng = random.Random(f"{seed}/{name}/{i}")
            image = draw_shape(shape, colour, rng)
            if i % 2 == 0:
                path, data = folder / f"{name}_{i:03d}.jpg", _encode(image, "JPEG", quality=90)
            else:
                path, data = folder / f"{name}_{i:03d}.png", _encode(image, "PNG")
            path.write_bytes(data)
            written[name].append(path)
    return written


@dataclass
class BadCorpus:
    """What `make_bad_input_corpus` wrote and what ingestion must make of it.

    Folder layout: `folder` is an input_base. Manifest layout: `manifest` is a CSV next to `folder`.
    `*_rejects` map (path as reported, label) -> expected reason code; `*_accepted` are the paths that must
    become examples; `*_vocabulary` the expected sorted label list.
    """

    folder: Path
    manifest: Path
    folder_rejects: dict[tuple[str, str], str] = field(default_factory=dict)
    folder_accepted: set[str] = field(default_factory=set)
    folder_vocabulary: list[str] = field(default_factory=list)
    manifest_rejects: dict[tuple[str, str], str] = field(default_factory=dict)
    manifest_accepted: set[str] = field(default_factory=set)
    manifest_vocabulary: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


NON_ASCII_LABEL = "ünïcødé_标签"
NON_ASCII_FILE = "façade_图片.png"
HUGE_SIZE = (6000, 4000)


def png_bomb(width: int = 23000, height: int = 23000) -> bytes:
    """A valid 1-bit grayscale PNG of width x height zeros: ~62 KB at 23000^2, which decodes to 1.6 GB of RGB."""
    import struct
    import zlib

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def jpeg_header_bomb(side: int = 13000) -> bytes:
    """A < 1 KB JPEG whose frame header claims side x side pixels (the scan data is for 8x8)."""
    import struct

    data = bytearray(_encode(Image.new("L", (8, 8)), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", side, side)
    return bytes(data)


def make_bad_input_corpus(root) -> BadCorpus:
    """Writes a folder-per-class tree and a manifest full of edge cases, and says what must happen to each.

    Unreadable file: tests run as root, so chmod 000 does not stop reads. The honest stand-ins are a named pipe
    (FIFO) named like an image (opening it would block forever; ingestion must not open it), a dangling symlink,
    and, in the manifest, a row naming a directory.
    """
    root = Path(root)
    folder = root / "images"
    if folder.exists():
        shutil.rmtree(folder)
    corpus = BadCorpus(folder=folder, manifest=root / "manifest.csv")
    rng = random.Random(1234)
    circle, square = folder / "circle", folder / "square"
    for directory in (circle, square, folder / NON_ASCII_LABEL, folder / "empty_class", circle / "nested"):
        directory.mkdir(parents=True, exist_ok=True)

    def shape_image(shape: str, size: int = 96) -> Image.Image:
        return draw_shape(shape, _COLOURS[_SHAPES.index(shape)], rng, size)

    def accept(rel: str, data: bytes) -> None:
        (folder / rel).write_bytes(data)
        corpus.folder_accepted.add(rel)

    def reject(rel: str, label: str, code: str, data: bytes | None = None) -> None:
        if data is not None:
            (folder / rel).write_bytes(data)
        corpus.folder_rejects[(rel, label)] = code

    # Plain good images so every real class is usable.
    for i in range(3):
        accept(f"circle/good_{i}.png", _encode(shape_image("circle"), "PNG"))
        accept(f"square/good_{i}.jpg", _encode(shape_image("square"), "JPEG"))
    accept("circle/nested/deeper_good.jpg", _encode(shape_image("circle"), "JPEG"))  # recursion inside a class
    # Non-ASCII label and file names.
    for i in range(2):
        accept(f"{NON_ASCII_LABEL}/{i}_{NON_ASCII_FILE}", _encode(shape_image("triangle"), "PNG"))

    # Awkward but decodable by TensorFlow exactly as serving will decode them: accepted.
    accept("circle/alpha.png", _encode(shape_image("circle").convert("RGBA"), "PNG"))
    gray16 = Image.fromarray(np.asarray(shape_image("circle").convert("L"), dtype=np.uint16) * 257)  # I;16
    accept("circle/sixteen_bit.png", _encode(gray16, "PNG"))
    accept("circle/grayscale.jpg", _encode(shape_image("circle").convert("L"), "JPEG"))
    accept("circle/cmyk.jpg", _encode(shape_image("circle").convert("CMYK"), "JPEG"))
    accept("square/palette.gif", _encode(shape_image("square").convert("P"), "GIF"))
    frames = [shape_image("square").convert("P") for _ in range(3)]
    accept("square/animated.gif", _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100,
                                          loop=0))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW on display; TF ignores it in training and serving alike.
    accept("square/exif_rotated.jpg", _encode(shape_image("square", 80).resize((80, 60)), "JPEG", exif=exif))
    accept("square/huge_6000x4000.jpg", _encode(Image.new("RGB", HUGE_SIZE, (40, 90, 220)), "JPEG", quality=70))
    accept("square/bitmap.bmp", _encode(shape_image("square"), "BMP"))
    good_copy = (folder / "circle/good_0.png").read_bytes()
    corpus.notes["circle/good_0.png"] = "kept: an identical copy in the same class is dropped instead"

    # Unusable: rejected with a reason.
    reject("circle/zero_byte.jpg", "circle", "empty_file", b"")
    full_jpeg = _encode(shape_image("circle"), "JPEG")
    reject("circle/truncated.jpg", "circle", "undecodable", full_jpeg[: len(full_jpeg) // 2])
    reject("circle/text_file.jpg", "circle", "unsupported_format", b"this is a text file, not a JPEG\n" * 4)
    reject("circle/one_by_one.png", "circle", "too_small", _encode(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"))
    # TensorFlow decodes WebP, but serving promises JPEG/PNG/GIF/BMP: follow the shared SUPPORTED_FORMATS list.
    webp = _encode(shape_image("circle"), "WEBP")
    if "WEBP" in SUPPORTED_FORMATS:
        accept("circle/webp_named.jpg", webp)
    else:
        reject("circle/webp_named.jpg", "circle", "unsupported_format", webp)
    reject("circle/good_0_copy.png", "circle", "duplicate_same_label", good_copy)
    shared = _encode(shape_image("triangle"), "PNG")
    reject("circle/shared.png", "circle", "duplicate_conflicting_labels", shared)
    reject("square/shared.png", "square", "duplicate_conflicting_labels", shared)
    os.symlink("loop_b.jpg", circle / "loop_a.jpg")
    os.symlink("loop_a.jpg", circle / "loop_b.jpg")
    reject("circle/loop_a.jpg", "circle", "symlink_loop")
    reject("circle/loop_b.jpg", "circle", "symlink_loop")
    os.symlink("..", circle / "nested" / "back_to_circle")  # a directory link that walks back up
    reject("circle/nested/back_to_circle/", "circle", "symlink_loop")
    os.mkfifo(square / "unreadable_fifo.jpg")
    reject("square/unreadable_fifo.jpg", "square", "not_regular_file")
    os.symlink("gone.jpg", square / "dangling_link.jpg")
    reject("square/dangling_link.jpg", "square", "missing_file")
    reject("empty_class/", "empty_class", "empty_class")
    reject("README.txt", "", "not_in_class_folder", b"stray file at the top level\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")  # hidden: skipped, not a class, not a reject
    # Decompression bombs: refused from the header, never decoded.
    reject("circle/bomb_23000x23000.png", "circle", "too_many_pixels", png_bomb())
    reject("square/header_claims_13000x13000.jpg", "square", "too_many_pixels", jpeg_header_bomb())
    # Symbolic links leaving the data folder (a file and a folder) are reported, never followed.
    outside = root / "outside_data_root"
    outside.mkdir(exist_ok=True)
    (outside / "elsewhere.png").write_bytes(_encode(shape_image("circle"), "PNG"))
    os.symlink(outside / "elsewhere.png", circle / "link_to_elsewhere.png")
    reject("circle/link_to_elsewhere.png", "circle", "link_outside_data_root")
    os.symlink(outside, square / "linked_folder")
    reject("square/linked_folder/", "square", "link_outside_data_root")
    # A folder named like an image is reported and not searched.
    (circle / "z.jpg").mkdir()
    (circle / "z.jpg" / "inside.png").write_bytes(_encode(shape_image("circle"), "PNG"))
    reject("circle/z.jpg/", "circle", "image_named_folder")
    corpus.folder_vocabulary = sorted(["circle", "square", NON_ASCII_LABEL])

    # Manifest next to the folder: relative paths resolve against the manifest's folder; one absolute path.
    (folder / "square" / "a_directory.jpg").mkdir()
    corpus.folder_rejects[("square/a_directory.jpg/", "square")] = "image_named_folder"
    rows = [
        ("images/circle/good_0.png", "circle", corpus.manifest_accepted),
        ("images/circle/good_1.png", "circle", corpus.manifest_accepted),
        (str(folder / "square/good_0.jpg"), "square", corpus.manifest_accepted),
        ("images/square/good_1.jpg", "square", corpus.manifest_accepted),
        (f"images/{NON_ASCII_LABEL}/0_{NON_ASCII_FILE}", NON_ASCII_LABEL, corpus.manifest_accepted),
        ("images/circle/cmyk.jpg", "circle", corpus.manifest_accepted),
    ]
    lines = ["path,label"]
    for path, label, bucket in rows:
        lines.append(f"{path},{label}")
        bucket.add(path)
    manifest_rejects = [
        ("images/circle/does_not_exist.jpg", "circle", "missing_file"),
        ("images/square/a_directory.jpg", "square", "not_regular_file"),
        ("images/circle/truncated.jpg", "circle", "undecodable"),
        ("images/square/unreadable_fifo.jpg", "square", "not_regular_file"),
        # The same file under two labels: both rows rejected, the reason names both labels.
        ("images/circle/good_2.png", "circle", "duplicate_conflicting_labels"),
        ("images/circle/good_2.png", "square", "duplicate_conflicting_labels"),
    ]
    for path, label, code in manifest_rejects:
        lines.append(f"{path},{label}")
        corpus.manifest_rejects[(path, label)] = code
    corpus.manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus.manifest_vocabulary = sorted(["circle", "square", NON_ASCII_LABEL])
    return corpus
