"""Label files: a CSV (`path,label`, several labels joined by `;`) or JSON Lines
(`{"path": …, "labels": […]}`) naming each image and its classes, as labelling tools export
them. No torch: evaluate reads them too."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import MobileNetError, printable
from ..files import read_regular
from ..limits import LABEL_FILES
from ..progress import bar
from .images import check_class_names, within

LABEL_FILE_LIMIT = 2**28  # 256 MB: millions of rows
SEPARATOR = ";"  # between a CSV row's labels


def is_label_file(path) -> bool:
    return str(path).lower().endswith(LABEL_FILES)


def read_label_file(path) -> tuple[list[str], list[tuple[str, int | tuple[int, ...]]]]:
    """(classes, [(image path, class index)]) of a label file, or when a row has several
    labels (path, (class indices)) for every row: a multi-label set, where a row may also
    have none (an image that holds none of the classes). Paths are relative to
    the file's folder and must stay in it (links too) and name a regular file; the classes
    are the labels, sorted. A row that cannot be read names its line."""
    path = Path(path)
    try:
        raw = read_regular(path, LABEL_FILE_LIMIT, "--data")
    except FileNotFoundError:
        raise MobileNetError(f"--data {printable(path)}: no such file; give a label file (.csv or .jsonl)") from None
    try:
        text = raw.decode("utf-8-sig")  # a spreadsheet's UTF-8 starts with a BOM
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise MobileNetError(f"{printable(path)} line {line}: not UTF-8; save the file as UTF-8") from None
    rows = _jsonl_rows(path, text) if path.suffix.lower() == ".jsonl" else _csv_rows(path, text)
    folder, shown = os.path.realpath(path.parent), printable(path)
    found, seen, unlabelled = [], {}, None
    for line, name, labels in bar(rows, desc=f"reading {shown}", unit=" rows"):
        where = f"{shown} line {line}"
        if not name.strip():
            raise MobileNetError(f"{where}: no image path; give each row a path relative to the file's folder")
        labels = list(dict.fromkeys(labels))  # "cat;cat" is one label
        if not labels and unlabelled is None:  # judged at the end: a multi-label file may hold none
            unlabelled = f"{where}: no label for {printable(name)}; give each image its class"
        image = os.path.join(folder, name)  # an absolute path stays absolute, and must lie inside too
        key = os.path.realpath(image)  # links followed: where the image really is
        if not within(key, folder):
            raise MobileNetError(f"{where}: {printable(name)} leaves the folder of {printable(path.name)}; "
                                 "keep the images in that folder or below it")
        if not _regular(key):
            raise MobileNetError(f"{where}: {printable(name)} is not a file (missing, or a folder, a FIFO "
                                 "or a device); give the path of an image")
        if key in seen:
            raise MobileNetError(f"{where}: {printable(name)} is listed again (first at line {seen[key]}); "
                                 "give each image one row")
        seen[key] = line
        found.append((os.path.normpath(image), labels))
    if not found:
        raise MobileNetError(f"{printable(path)}: no rows; give one row per image after the header")
    several = any(len(labels) > 1 for _, labels in found)
    if unlabelled and not several:
        raise MobileNetError(unlabelled + " (an image with none is taken only where some image has several)")
    classes = sorted({label for _, labels in found for label in labels})
    check_class_names(path, classes, "label")
    index = {c: i for i, c in enumerate(classes)}
    if not several:
        return classes, [(image, index[labels[0]]) for image, labels in found]
    return classes, [(image, tuple(sorted(index[label] for label in labels))) for image, labels in found]


def one_hot(label, num_classes: int) -> np.ndarray:
    """A multi-label target: 1.0 for each of the image's classes (a tuple, or one index), else 0."""
    found = np.zeros(num_classes, np.float32)
    found[list(label) if isinstance(label, tuple) else label] = 1
    return found


def _regular(real: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(real).st_mode)
    except OSError:  # missing, or a link that leads nowhere
        return False


def _labels(text: str) -> list[str]:
    return [label.strip() for label in text.split(SEPARATOR) if label.strip()]


def _csv_rows(path: Path, text: str):
    """(line, path, labels) of a CSV with a `path,label` header (in any column order;
    other columns are ignored), read as a spreadsheet writes it: quoting, commas and line
    breaks inside quotes."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip().lower() for h in next(reader, [])]
        if "path" not in header or not {"label", "labels"} & set(header):
            raise MobileNetError(f"{printable(path)} line 1: the header must name the columns path and label "
                                 f"(found {printable(','.join(header)) or 'nothing'}); start the file with path,label")
        at_path, at_label = header.index("path"), header.index("label" if "label" in header else "labels")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue  # a blank line
            if len(row) != len(header):
                raise MobileNetError(f"{printable(path)} line {reader.line_num}: {len(row)} columns where the "
                                     f"header has {len(header)}; quote a field that holds a comma")
            yield reader.line_num, row[at_path], _labels(row[at_label])
    except csv.Error as e:
        raise MobileNetError(f"{printable(path)} line {reader.line_num}: not readable as CSV ({e}); "
                             "save it as CSV from a spreadsheet") from None


def _jsonl_rows(path: Path, text: str):
    """(line, path, labels) of JSON Lines: one object per line with "path" and "labels" (a
    list) or "label" (a string); blank lines are skipped."""
    for line, row in enumerate(text.splitlines(), 1):
        if not row.strip():
            continue
        where = f"{printable(path)} line {line}"
        try:
            item = json.loads(row)
        except ValueError as e:
            raise MobileNetError(f"{where}: not JSON ({e}); give one object per line") from None
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise MobileNetError(f'{where}: give an object with "path" (a string) and "label" or "labels"')
        labels = item.get("labels", [item["label"]] if "label" in item else None)
        if not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
            raise MobileNetError(f'{where}: "labels" must be a list of strings, or "label" one string')
        yield line, item["path"], [x.strip() for x in labels if x.strip()]
