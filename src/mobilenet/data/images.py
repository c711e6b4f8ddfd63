"""Image files and arrays with PIL and numpy only, no torch: what a deployed model needs.

`sources.py` (training, torch) and `runtime.py` (ONNX Runtime, no torch) share these, so an
image is decoded and prepared the same way on both paths.
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import warnings
import zlib
from pathlib import Path

import numpy as np

from ..errors import MobileNetError, first_line, has_control, look_alike, printable
from ..files import open_regular
from ..progress import bar

FASHION_MNIST = "fashion-mnist"  # the --data name of the built-in data set
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


MAX_IDX_BYTES = 2**30  # Fashion-MNIST's training images are 47 MB


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or raw), as in the MNIST family: magic, dims, then uint8 data.
    Only the bytes its header states are read, and at most MAX_IDX_BYTES: a small .gz
    may expand to gigabytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or int.from_bytes(head, "big") >> 8 != 0x08:  # 0x08 = unsigned byte
                raise ValueError("bad magic number")
            raw = f.read(4 * head[3])
            if len(raw) < 4 * head[3]:
                raise ValueError("truncated header")
            dims = [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)]
            size = math.prod(dims)
            if size > MAX_IDX_BYTES:
                raise ValueError(f"its header states {size:,} bytes, beyond the {MAX_IDX_BYTES:,} read")
            data = f.read(size + 1)  # one more, to see whether there is more
        if len(data) != size:
            raise ValueError("truncated" if len(data) < size else "more data than its header states")
        return np.frombuffer(data, dtype=np.uint8).reshape(dims)
    except (OSError, ValueError, EOFError, IndexError, zlib.error) as e:
        raise MobileNetError(f"{path} is not a readable IDX file ({e}); reinstall dataset-fashion-mnist") from None


def fashion_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    prefix = "train" if split == "train" else "t10k"
    for suffix in (".gz", ""):
        images = folder / f"{prefix}-images-idx3-ubyte{suffix}"
        labels = folder / f"{prefix}-labels-idx1-ubyte{suffix}"
        if images.exists() and labels.exists():
            return images, labels
    return None


def fashion_mnist_dir() -> Path:
    """Where the Fashion-MNIST files are: $MOBILENET_FASHION_MNIST, Debian's package, or a
    torchvision download into the cache folder (needs internet access)."""
    candidates = [Path(os.environ["MOBILENET_FASHION_MNIST"])] if os.environ.get("MOBILENET_FASHION_MNIST") else []
    candidates.append(DEBIAN_DIR)
    for folder in candidates:
        if fashion_files(folder, "train") and fashion_files(folder, "test"):
            return folder
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mobilenet"
    raw = cache / "FashionMNIST" / "raw"
    if not (fashion_files(raw, "train") and fashion_files(raw, "test")):
        try:
            from torchvision.datasets import FashionMNIST  # only when the files are missing
            for train in (True, False):
                FashionMNIST(str(cache), train=train, download=True)
        except Exception:  # no network, a proxy, a full disk: one answer for all
            raise MobileNetError(
                "Fashion-MNIST not found: install it with `apt-get install dataset-fashion-mnist` "
                f"(files in {DEBIAN_DIR}) or allow torchvision to download it into {cache}") from None
    return raw


MAX_RESIZE = 2  # resize and image_size at most this × the resolution (torchvision's test resize is 256/224)
MAX_ASPECT = 100  # a 1×50,000 image would resize to 256×12,800,000 (3 GB)


def convert_image(im, channels: int):
    """A decoded PIL image -> 8-bit RGB (3 channels) or L (1): 16-bit scaled down,
    transparent pixels on white."""
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / hi * 255.0, 0, 255).astype(np.uint8), "L")
    if im.mode in ("P", "PA", "LA", "RGBA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")  # transparent pixels become white
        im = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return im.convert("RGB" if channels == 3 else "L")


def load_image(path, channels: int = 3):
    """Open any image (JPEG, PNG, BMP, GIF, WebP, TIFF; L, RGB, RGBA, P, CMYK, 16-bit),
    apply its EXIF rotation, and convert it to 8-bit RGB (3 channels) or L (1 channel).
    Raises MobileNetError naming the file if it does not decode."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings(), open_regular(path) as f:
            warnings.simplefilter("ignore")  # PIL's notes on odd files: the file decodes, or we say why not
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                w, h = im.size
                if max(w, h) > MAX_ASPECT * min(w, h):  # its resize to 256 on the short side would be huge
                    raise MobileNetError(f"{path}: {w}×{h} pixels, an aspect ratio beyond {MAX_ASPECT}:1; "
                                         "crop it to the object first")
                im.seek(0)  # first frame of an animation
                im = ImageOps.exif_transpose(im)
                im.load()
                return convert_image(im, channels)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, MemoryError) as e:
        reason = first_line(e)
        if isinstance(e, Image.UnidentifiedImageError):  # its message names our file object
            reason = "not an image format that Pillow reads"
        raise MobileNetError(f"{path}: not a readable image ({reason})") from None


def short_side(path) -> int | None:
    """An image's shorter side from its header (nothing decoded); None if it does not open."""
    from PIL import Image

    try:
        with warnings.catch_warnings(), open_regular(path) as f:
            warnings.simplefilter("ignore")  # PIL's notes (a decompression bomb's among them): a size is all we read
            with Image.open(f) as im:
                return min(im.size)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError):
        return None


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # a byte that is not UTF-8 decodes to a lone surrogate, which does not encode
    except UnicodeEncodeError:
        return False
    return True


def check_class_names(where, classes, what: str) -> None:
    """MobileNetError unless every class name can be printed, drawn and written into
    config.json and an exported file's metadata, and no two print the same."""
    named = next((c for c in classes if has_control(c)), None)
    if named is not None:
        raise MobileNetError(f"{printable(where)}: the {what} {printable(named)} has control "
                             "characters in its name; rename it")
    named = next((c for c in classes if not _utf8(c)), None)
    if named is not None:
        raise MobileNetError(f"{printable(where)}: the {what} {ascii(named)} has a name that is not UTF-8; "
                             "rename it")
    pair = look_alike(classes)
    if pair:
        raise MobileNetError(f"{printable(where)}: the {what}s {ascii(pair[0])} and {ascii(pair[1])} differ only in "
                             "how their accents are encoded (Unicode normalisation), so they print the same; rename one")


def scan_folder(root: Path, inside=None) -> tuple[list[str], list[tuple[str, int]], int]:
    """ImageFolder's convention without torch: class = sub-folder (sorted), images found
    recursively by extension. Links are followed while they stay inside `inside` (default
    root); links that leave it, and image names that are no regular file (a FIFO would
    block a read forever), are skipped. Returns (classes, [(path, class index)], skipped)."""
    root = Path(root)
    inside = os.path.realpath(inside or root)
    names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    classes = [n for n in names if within(os.path.realpath(root / n), inside)]
    skipped = len(names) - len(classes)
    check_class_names(root, classes, "class folder")
    samples = []
    with bar(desc=f"scanning {root}", unit=" images") as shown:
        for index, name in enumerate(classes):
            found, seen = [], {os.path.realpath(root / name)}
            for folder, subfolders, files in os.walk(root / name, followlinks=True):
                # links are followed, but each real folder once (a link loop ends here) and never out of `inside`
                real = {d: os.path.realpath(os.path.join(folder, d)) for d in subfolders}
                outside = {d for d in subfolders if not within(real[d], inside)}
                skipped += len(outside)
                subfolders[:] = [d for d in subfolders if d not in outside and real[d] not in seen]
                seen.update(real.values())
                candidates = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith(".")]
                images = [(folder, f) for f in candidates if regular_inside(os.path.join(folder, f), inside)]
                skipped += len(candidates) - len(images)
                found += images
                shown.update(len(images))
            samples += [(os.path.join(folder, f), index) for folder, f in sorted(found)]
    return classes, samples, skipped


def within(real: str, inside: str) -> bool:
    """Whether the real path `real` is `inside` or below it."""
    return real == inside or real.startswith(inside.rstrip(os.sep) + os.sep)


def regular_inside(path: str, inside: str) -> bool:
    """A regular file, or a link to one that stays inside `inside`."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not within(os.path.realpath(path), inside):
                return False
            st = os.stat(path)
    except OSError:  # a dangling link, or gone since the listing
        return False
    return stat.S_ISREG(st.st_mode)


def _bilinear_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    n = x.shape[axis]
    src = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (src - i0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = size
    w = w.reshape(shape)
    return np.take(x, i0, axis=axis) * (1 - w) + np.take(x, i1, axis=axis) * w


def bilinear_resize(x: np.ndarray, size: int) -> np.ndarray:
    """(..., H, W) -> (..., size, size), as torch's interpolate(mode="bilinear",
    align_corners=False) without antialiasing."""
    return _bilinear_axis(_bilinear_axis(x, size, -2), size, -1).astype(np.float32)


def prepare(image, spec: dict) -> np.ndarray:
    """A decoded PIL image -> float32 (C, R, R), prepared like the model's test images.

    spec is config.json's "input": channels, resolution, mean, std, and either image_size
    (a data set of small images: resize to it, then bilinear to the resolution, as in
    training) or resize (shorter side, then a centre crop, as torchvision does)."""
    from PIL import Image

    if spec.get("image_size"):
        size = spec["image_size"]
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        return from_pixels(_chw(image), spec)
    r = spec["resolution"]
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec["resize"], int(spec["resize"] * long / short)
    image = image.resize((new_short, new_long) if w <= h else (new_long, new_short), Image.BILINEAR)
    w, h = image.size
    top, left = int(round((h - r) / 2.0)), int(round((w - r) / 2.0))
    return from_pixels(_chw(image.crop((left, top, left + r, top + r))), spec)  # cropped in uint8: r×r floats only


def from_pixels(x: np.ndarray, spec: dict) -> np.ndarray:
    """Pixels (float32 (..., C, S, S), 0 to 255) at the data's image size, or cropped to the
    resolution -> the model's input: /255, the mean and std, and the bilinear resize to the
    resolution where the data's images are smaller or larger. prepare's second half."""
    r = spec["resolution"]
    mean = np.asarray(spec["mean"], np.float32).reshape(-1, 1, 1)
    std = np.asarray(spec["std"], np.float32).reshape(-1, 1, 1)
    x = ((x / np.float32(255) - mean) / std).astype(np.float32)
    return bilinear_resize(x, r) if x.shape[-1] != r else x


def crop_input_spec(channels: int, resolution: int, mean, std) -> dict:
    """config.json's "input" for images of any size: shorter side to 256/224 of the
    resolution, then a centre crop (torchvision's and timm's test recipe)."""
    return {"channels": channels, "image_size": None, "resolution": resolution,
            "resize": round(resolution * 256 / 224), "mean": list(mean), "std": list(std)}


def _chw(image) -> np.ndarray:
    a = np.asarray(image, dtype=np.float32)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def prepare_files(paths, spec: dict) -> tuple[np.ndarray | None, list, list[dict]]:
    """Image files, decoded and prepared with `prepare`. Returns (batch or None, the
    paths in it, {"image": path, "reason": why} for each file that did not decode)."""
    arrays, ok, errors = [], [], []
    for p in paths:
        try:
            arrays.append(prepare(load_image(p, spec["channels"]), spec))
            ok.append(p)
        except MobileNetError as e:
            errors.append({"image": str(p), "reason": str(e).removeprefix(f"{p}: ")})
    return (np.stack(arrays) if arrays else None), ok, errors
