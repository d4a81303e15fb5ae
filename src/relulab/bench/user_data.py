"""Load the user's own data for the bench's csv/npz task: a classification table from a CSV or
NPZ file, with errors that point at the file, line and cell."""

from __future__ import annotations

import csv
import io
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from relulab.errors import UserError
from relulab.registry import did_you_mean


def read_bytes(path: str | Path) -> bytes:
    """The file's content; UserError in one line when it is missing or unreadable."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot read {path}: it is a directory, not a .csv or .npz file")
    if not path.is_file():
        raise UserError(f"cannot read {path}: no such file")
    try:
        return path.read_bytes()
    except OSError as error:  # e.g. no permission, or the disk failed mid-read
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None


def load_table(
    path: str | Path, target: str, content: bytes | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64, N×D) and class indices (N,) from a .csv or .npz file.

    CSV: a header row; ``target`` names the label column; every other column must be
    numeric. NPZ: an array ``x`` (or ``X``) of shape N×D and the label array named ``target``.
    ``content``, when given, is the file's bytes, read before (a bench trial gets them from
    the driver, on a machine that may not have the file): the file is then not opened, and
    ``path`` only names it in messages and gives its type by its suffix.
    Raises UserError, in one line naming the file (and the line and column where there is
    one), for a missing or unreadable file and for anything malformed.
    """
    path = Path(path)
    if path.suffix.lower() not in (".npz", ".csv", ".txt"):
        suffix = path.suffix or "no suffix"
        raise UserError(f"{path}: expected a .csv or .npz file, got {suffix!r}")
    if content is None:
        content = read_bytes(path)
    if path.suffix.lower() == ".npz":
        x, labels = _read_npz(path, content, target)
    else:
        x, labels = _read_csv(path, content, target)
    classes, y = _class_indices(labels)
    if len(classes) < 2:
        raise UserError(
            f"{path}: the target {target!r} has {len(classes)} class(es); need at least 2"
        )
    counts = np.bincount(y)
    if counts.min() < 2:
        rare = classes[int(counts.argmin())]
        raise UserError(f"{path}: class {rare!r} has only 1 row; each class needs at least 2")
    return x, y


def target_choices(path: str | Path) -> list[str]:
    """What --target may name in the file: the CSV's header, or the NPZ's arrays (none
    where the file cannot be read: the load itself reports that)."""
    path = Path(path)
    try:
        content = read_bytes(path)
        if path.suffix.lower() == ".npz":
            with np.load(io.BytesIO(content), allow_pickle=False) as archive:
                return [k for k in archive if k not in ("x", "X", "features")]
        header = next(csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")), [])
        return [name.strip() for name in header if name.strip()]
    except (UserError, OSError, ValueError, EOFError, zipfile.BadZipFile, csv.Error):
        return []


def _name_hint(name: str, names: list[str], kind: str) -> str:
    """'; did you mean ...?' among ``names``, else the list of them.

    A name of one or two characters is never offered: did_you_mean also offers a choice
    found inside the word, and a column 'c' is found inside 'species'.
    """
    hint = did_you_mean(name, [n for n in names if len(n) >= 3])
    return hint or f" ({kind}: {', '.join(names) or 'none'})"


def _class_indices(labels: list[str]) -> tuple[list[str], np.ndarray]:
    """Classes in sorted order; numeric labels compare as numbers (``1`` and ``1.0`` are one)."""

    def key(label: str) -> tuple:
        try:
            return (0, float(label), "")
        except ValueError:
            return (1, 0.0, label)

    names: dict[tuple, str] = {}
    for label in labels:
        names.setdefault(key(label), label)
    ordered = sorted(names)
    index = {k: i for i, k in enumerate(ordered)}
    classes = [names[k] for k in ordered]
    return classes, np.asarray([index[key(label)] for label in labels], dtype=np.int64)


def _read_csv(path: Path, content: bytes, target: str) -> tuple[np.ndarray, list[str]]:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:  # the line of the first byte that is not UTF-8
        line = content[: error.start].count(b"\n") + 1
        raise UserError(f"{path} line {line}: not UTF-8 text") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        return _parse_csv(path, rows, target)
    except csv.Error as error:  # e.g. a field over the csv module's size limit
        raise UserError(f"{path} line {rows.line_num}: {error}") from None


def _parse_csv(path: Path, rows, target: str) -> tuple[np.ndarray, list[str]]:
    header = [name.strip() for name in next(rows, [])]
    if not any(header):
        raise UserError(f"{path}: empty file (expected a header row)")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise UserError(f"{path} line 1: column {repeated[0]!r} appears twice")
    if target not in header:
        hint = _name_hint(target, header, "columns")
        raise UserError(f"{path}: no column {target!r}{hint}")
    if len(header) < 2:
        raise UserError(f"{path}: no feature columns besides the target {target!r}")
    label_at = header.index(target)
    features, labels = [], []
    end_of_previous = rows.line_num
    for row in rows:
        line, end_of_previous = end_of_previous + 1, rows.line_num  # a row may span lines
        if not row or all(not cell.strip() for cell in row):
            continue
        if any("\n" in cell or "\r" in cell for cell in row):
            raise UserError(f"{path} line {line}: a field spans lines (an unterminated quote?)")
        if len(row) != len(header):
            raise UserError(f"{path} line {line}: expected {len(header)} fields, got {len(row)}")
        values = [
            _number(cell, f"{path} line {line}, column {header[column]!r}")
            for column, cell in enumerate(row)
            if column != label_at
        ]
        label = row[label_at].strip()
        if not label:
            raise UserError(f"{path} line {line}, column {target!r}: missing label")
        features.append(values)
        labels.append(label)
    if not features:
        raise UserError(f"{path}: no data rows after the header")
    return np.asarray(features, dtype=np.float64), labels


def _number(cell: str, where: str) -> float:
    text = cell.strip()
    if not text:
        raise UserError(f"{where}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: {text!r} is not finite")
    return value


def _read_npz(path: Path, content: bytes, target: str) -> tuple[np.ndarray, list[str]]:
    try:
        archive = np.load(io.BytesIO(content), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: holds a single array, not an .npz archive with x and the labels")
    with archive:
        keys = list(archive.keys())
        feature_key = next((k for k in ("x", "X", "features") if k in keys), None)
        if feature_key is None:
            raise UserError(f"{path}: no feature array 'x' (arrays: {', '.join(keys) or 'none'})")
        if target not in keys:
            hint = _name_hint(target, keys, "arrays")
            raise UserError(f"{path}: no label array {target!r}{hint}")
        try:
            x, y = archive[feature_key], archive[target]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise UserError(f"{path}: a damaged .npz archive ({error})") from None
    real = np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    if x.ndim != 2 or not real:
        raise UserError(
            f"{path}: {feature_key!r} must be a 2-D real array, got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(
            f"{path}: {target!r} must be 1-D with {len(x)} entries, got shape {y.shape}"
        )
    bad = np.argwhere(~np.isfinite(x.astype(np.float64)))
    if len(bad):
        row, column = bad[0]
        raise UserError(f"{path}: {feature_key}[{row}, {column}] is not finite ({x[row, column]})")
    return x.astype(np.float64), [str(v) for v in y.tolist()]
