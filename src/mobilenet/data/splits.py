"""The classes and the train/test samples of the data named by --data, when it is a folder
of images or a label file. No torch: evaluate reads them too."""

from __future__ import annotations

from pathlib import Path

from ..errors import MobileNetError
from ..limits import check_data
from ..seeds import stratified_split
from .images import IMAGE_EXTENSIONS, scan_folder
from .labels import is_label_file, read_label_file


def data_splits(root, test_split: float = 0.2, seed: int = 0) -> dict:
    """A folder's or a label file's classes and train/test samples: a folder's train/ and
    val/ (or test/) sub-folders when it has them, otherwise a stratified hold-out."""
    root = check_data(Path(root), MobileNetError)
    labelled = is_label_file(root)
    test_dir = None if labelled else next((root / d for d in ("val", "test") if (root / d).is_dir()), None)
    if labelled:
        classes, samples = read_label_file(root)
        train, test = stratified_split(samples, test_split, seed, "test")
        split, skipped = {"test_split": test_split, "seed": seed}, 0
    elif test_dir is not None and (root / "train").is_dir():
        classes, train, skipped = scan_folder(root / "train", root)
        test_classes, test, skipped_test = scan_folder(test_dir, root)
        skipped += skipped_test
        if test_classes != classes:
            raise MobileNetError(f"{root / 'train'} and {test_dir} have different class folders")
        split = {"train": str(root / "train"), "test": str(test_dir)}
    else:
        classes, samples, skipped = scan_folder(root)
        if not classes:
            raise MobileNetError(f"{root} has no class folders; put each class's images in a sub-folder")
        train, test = stratified_split(samples, test_split, seed, "test")
        split = {"test_split": test_split, "seed": seed}
    used = {label for _, label in train}
    if not train:
        raise MobileNetError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)}) in its class folders")
    if len(used) < 2:
        raise MobileNetError(f"{root} has images of {len(used)} class; a classifier needs at least two")
    if not test:
        raise MobileNetError(f"{root} leaves no test images: give each class at least two images"
                             f"{'' if labelled else ', or a val/ folder'}")
    return {"classes": classes, "train": train, "test": test, "split": split, "skipped": skipped}
