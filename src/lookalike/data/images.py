"""Reading images safely, whatever users feed us, and degrading face chips to low resolution."""

from __future__ import annotations

import hashlib
import io
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

MAX_PIXELS = 64_000_000  # decompression-bomb limit
MIN_SIDE = 8
MIN_LOWRES = 4  # smallest face width (px) a low-resolution protocol may degrade to


def check_lowres(lowres: int | None) -> int | None:
    """``lowres`` itself if it is None or a face width in pixels >= MIN_LOWRES; ValueError otherwise.

    The one check behind ``--lowres`` for every command, the protocol and :func:`~lookalike.embed.embed_paths`.
    """
    if lowres is None:
        return None
    if isinstance(lowres, bool) or not isinstance(lowres, int | np.integer) or lowres < MIN_LOWRES:
        raise ValueError(f"lowres must be a face width in pixels >= {MIN_LOWRES}, got {lowres!r}")
    return int(lowres)


def check_rgb8(image: object, name: str = "image") -> np.ndarray:
    """``image`` itself when it is an (H, W, 3) uint8 RGB array (what :func:`load_image` returns for any file), else a
    one-line ValueError naming what it is: uint16, float, bool, RGBA, gray or (3, H, W) arrays had failed in dlib, or
    passed alignment and failed in the matcher. Convert others as a file would be: :func:`to_rgb8` of a PIL image."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be an (H, W, 3) uint8 numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 RGB array, got {image.dtype} {image.shape} "
                         "(lookalike.data.images.to_rgb8 converts a PIL image of any mode)")
    return image


class ImageError(Exception):
    """An image that cannot be used; ``reason`` is a short code that reports count by."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def to_rgb8(img: Image.Image) -> np.ndarray:
    """Any PIL mode (L, LA, P, RGBA, CMYK, I;16, I, F, ...) to an (H, W, 3) uint8 RGB array."""
    if img.mode.startswith("I;16"):  # round(v * 255 / 65535) in integers: 4 bytes a pixel, not float64's 8 (x3)
        a = np.asarray(img, dtype=np.uint32)
        a *= 2 * 255
        a += 65535
        a //= 2 * 65535
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        a *= 255.0 / max(float(a.max()), 1.0)
        a += 0.5
        np.clip(a, 0, 255, out=a)
        return np.repeat(a.astype(np.uint8)[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An (H, W, 3) uint8 RGB array, EXIF orientation applied; raises :class:`ImageError` otherwise."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ImageError("missing", f"{path}: cannot read ({e.strerror})") from e
    if not stat.S_ISREG(st.st_mode):  # never open a named pipe (it would block) or a device
        raise ImageError("not_a_regular_file", f"{path}: not a regular file")
    size = st.st_size
    if size == 0:
        raise ImageError("empty", f"{path}: empty file (0 bytes)")
    return _decode(path, str(path), max_pixels)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """:func:`load_image` for bytes in memory (an upload): the same checks, ``name`` labels the messages."""
    if not data:
        raise ImageError("empty", f"{name}: empty file (0 bytes)")
    return _decode(io.BytesIO(data), name, max_pixels)


# Leading bytes of the image formats a service accepts (checked before any decoder sees the data).
MAGIC = (("jpeg", (b"\xff\xd8\xff",)), ("png", (b"\x89PNG\r\n\x1a\n",)), ("gif", (b"GIF87a", b"GIF89a")),
         ("bmp", (b"BM",)), ("tiff", (b"II*\x00", b"MM\x00*")), ("pnm", (b"P2", b"P3", b"P5", b"P6")))
# ISO base media files (an "ftyp" box first): HEIF/HEIC, what phones save photos as, and AVIF, by brand
HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1")
AVIF_BRANDS = (b"avif", b"avis")


def _media_brand(data: bytes) -> str | None:
    """heif or avif for an ISO base media file of those brands (the major brand, or for the generic mif1/msf1 the
    compatible ones), else None."""
    if data[4:8] != b"ftyp":
        return None
    major, compatible = data[8:12], data[16:int.from_bytes(data[:4], "big")]
    if major in AVIF_BRANDS or (major in (b"mif1", b"msf1") and
                                any(compatible[i:i + 4] in AVIF_BRANDS for i in range(0, len(compatible), 4))):
        return "avif"
    return "heif" if major in HEIF_BRANDS else None


def sniff_image_type(data: bytes) -> str | None:
    """The image format named by the first bytes (jpeg, png, gif, bmp, tiff, webp, pnm, heif, avif), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if (brand := _media_brand(data[:64])) is not None:
        return brand
    for kind, prefixes in MAGIC:
        if data.startswith(prefixes):
            if kind == "pnm" and (len(data) < 3 or data[2:3] not in b" \t\r\n#"):
                continue
            return kind
    return None


def _head(source: Path | io.BytesIO) -> bytes:
    if isinstance(source, io.BytesIO):
        return source.getbuffer()[:64].tobytes()
    with open(source, "rb") as f:
        return f.read(64)


def _open(source: Path | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    """The image, opened lazily by Pillow; a HEIF/HEIC photo (which Pillow does not read) decoded by pillow-heif
    once its size is known to be within ``max_pixels``, with its rotation applied (as HEIF stores it)."""
    if _media_brand(_head(source)) != "heif":
        return Image.open(source)
    import pillow_heif  # without registering it in Pillow: no process-wide state

    heif = pillow_heif.open_heif(source, convert_hdr_to_8bit=True)
    w, h = heif.size
    if w * h > max_pixels:
        raise ImageError("too_large", f"{name}: {w}x{h} exceeds the {max_pixels:,}-pixel limit")
    return heif.to_pillow()


def _decode(source: Path | io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open(source, name, max_pixels) as img:
                w, h = img.size
                if w * h > max_pixels:
                    raise ImageError("too_large", f"{name}: {w}x{h} exceeds the {max_pixels:,}-pixel limit")
                if min(w, h) < MIN_SIDE:
                    raise ImageError("too_small", f"{name}: {w}x{h} is too small for a face (min side {MIN_SIDE})")
                img.load()
                img = ImageOps.exif_transpose(img)
                return to_rgb8(img)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError("too_large", f"{name}: {e}") from e
    except OSError as e:
        msg = str(e)
        reason = "truncated" if "truncated" in msg or "broken data stream" in msg else "unreadable"
        raise ImageError(reason, f"{name}: not a readable image ({msg})") from e
    except (ValueError, SyntaxError, Exception) as e:  # PIL raises assorted errors on corrupt headers
        raise ImageError("unreadable", f"{name}: not a readable image ({type(e).__name__}: {e})") from e


# Width of the face detector's box as a fraction of an aligned chip (dlib HOG box vs. get_face_chip with
# padding 0.25: 0.92 +- 0.06, measured on LFW). A face "PX pixels across" has a detector box PX wide.
FACE_FRACTION = 0.92


def lowres_chip_size(face_px: int, face_fraction: float = FACE_FRACTION) -> int:
    """Side of the small chip on which a face spans ``face_px`` pixels (e.g. 20 px -> 22 px chip)."""
    return max(2, int(round(face_px / face_fraction)))


DEGRADE_KINDS = ("bicubic", "realistic")
# realistic degradation: ranges the per-image random settings are drawn from
BLUR_SIGMA = (0.0, 1.5)  # Gaussian blur before downsampling, in full-chip pixels
NOISE_SIGMA = (0.0, 8.0)  # additive Gaussian sensor noise on the small image, in 0..255 grey levels
JPEG_QUALITY = (30, 90)  # JPEG re-encoding quality of the small image (inclusive)


def check_degrade(kind: str) -> str:
    """``kind`` itself if it is one of :data:`DEGRADE_KINDS`; ValueError otherwise (the one check behind
    ``--degrade``)."""
    if kind not in DEGRADE_KINDS:
        raise ValueError(f"degrade must be one of {', '.join(DEGRADE_KINDS)}, got {kind!r}")
    return kind


def seed_from_key(key: str) -> int:
    """A 64-bit seed from an image's content key (so one file always gets the same random degradation)."""
    return int.from_bytes(hashlib.sha256(str(key).encode()).digest()[:8], "little")


def degrade(chip: np.ndarray, face_px: int, kind: str = "bicubic", seed: int | None = None,
            face_fraction: float = FACE_FRACTION) -> np.ndarray:
    """Make an aligned chip look like a face ``face_px`` pixels across, then bring it back to its size.

    ``bicubic``: the chip is reduced (bicubic, antialiased) to :func:`lowres_chip_size` pixels, so the face's
    detector box is about ``face_px`` wide (TinyFace's faces: about 20x16), then enlarged back (bicubic).
    ``realistic``: a camera-like chain with random settings drawn from ``seed`` (pass the image's
    :func:`seed_from_key`; None: a seed from the chip's own pixels): Gaussian blur (sigma in
    :data:`BLUR_SIGMA`), the same bicubic reduction, additive Gaussian noise (sigma in :data:`NOISE_SIGMA`),
    JPEG re-encoding (quality in :data:`JPEG_QUALITY`), then bicubic enlargement back.
    """
    check_degrade(kind)
    size = chip.shape[0]
    small = lowres_chip_size(face_px, face_fraction)
    if small >= size:
        return chip
    img = Image.fromarray(chip)
    if kind == "bicubic":
        low = img.resize((small, small), Image.BICUBIC, reducing_gap=None)
        return np.asarray(low.resize((size, size), Image.BICUBIC), dtype=np.uint8)
    if seed is None:
        seed = seed_from_key(hashlib.sha256(np.ascontiguousarray(chip).tobytes()).hexdigest())
    rng = np.random.default_rng(seed)
    blur, noise = rng.uniform(*BLUR_SIGMA), rng.uniform(*NOISE_SIGMA)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    if blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    low = np.asarray(img.resize((small, small), Image.BICUBIC, reducing_gap=None), dtype=np.float64)
    low = np.clip(low + rng.normal(0.0, noise, low.shape) + 0.5, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(low).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as jpeg:
        out = jpeg.convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(out, dtype=np.uint8)


def encode_png(array: np.ndarray, side: int | None = None) -> bytes:
    """An (H, W[, 3]) uint8 image as PNG bytes, shrunk to at most ``side`` pixels on its longer side."""
    img = Image.fromarray(array)
    if side is not None and max(img.size) > side:
        img.thumbnail((side, side), Image.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
