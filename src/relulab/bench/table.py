"""Load the user's own classification table (CSV or NPZ), with errors that point at the cell."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from relulab.registry import did_you_mean


def load_table(path: str | Path, target: str) -> tuple[np.ndarray, np.ndarray]:
    """Features (float64, N×D) and class indices (N,) from a .csv or .npz file.

    CSV: a header row; ``target`` names the label column; every other column must be
    numeric. NPZ: an array ``x`` (or ``X``) of shape N×D and the label array named ``target``.
    Raises ValueError naming the file, line and column of anything malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cannot read {path}: no such file")
    if path.suffix.lower() == ".npz":
        x, labels = _read_npz(path, target)
    elif path.suffix.lower() in (".csv", ".txt"):
        x, labels = _read_csv(path, target)
    else:
        raise ValueError(
            f"{path}: expected a .csv or .npz file, got {path.suffix or 'no suffix'!r}"
        )
    classes, y = _class_indices(labels)
    if len(classes) < 2:
        raise ValueError(
            f"{path}: the target {target!r} has {len(classes)} class(es); need at least 2"
        )
    counts = np.bincount(y)
    if counts.min() < 2:
        rare = classes[int(counts.argmin())]
        raise ValueError(f"{path}: class {rare!r} has only 1 row; each class needs at least 2")
    return x, y


def _class_indices(labels: list[str]) -> tuple[list[str], np.ndarray]:
    def order(label: str):
        try:
            return (0, float(label), label)
        except ValueError:
            return (1, 0.0, label)

    classes = sorted(set(labels), key=order)
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[label] for label in labels], dtype=np.int64)


def _read_csv(path: Path, target: str) -> tuple[np.ndarray, list[str]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = [name.strip() for name in next(rows, [])]
        if not any(header):
            raise ValueError(f"{path}: empty file (expected a header row)")
        if target not in header:
            hint = did_you_mean(target, header) or f" (columns: {', '.join(header)})"
            raise ValueError(f"{path}: no column {target!r}{hint}")
        if len(header) < 2:
            raise ValueError(f"{path}: no feature columns besides the target {target!r}")
        label_at = header.index(target)
        features, labels = [], []
        for row in rows:
            line = rows.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise ValueError(
                    f"{path} line {line}: expected {len(header)} fields, got {len(row)}"
                )
            values = []
            for column, cell in enumerate(row):
                if column == label_at:
                    continue
                values.append(_number(cell, f"{path} line {line}, column {header[column]!r}"))
            label = row[label_at].strip()
            if not label:
                raise ValueError(f"{path} line {line}, column {target!r}: missing label")
            features.append(values)
            labels.append(label)
    if not features:
        raise ValueError(f"{path}: no data rows after the header")
    return np.asarray(features, dtype=np.float64), labels


def _number(cell: str, where: str) -> float:
    text = cell.strip()
    if not text:
        raise ValueError(f"{where}: missing value")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text!r} is not finite")
    return value


def _read_npz(path: Path, target: str) -> tuple[np.ndarray, list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a readable .npz file ({error})") from None
    with archive:
        keys = list(archive.keys())
        feature_key = next((k for k in ("x", "X", "features") if k in keys), None)
        if feature_key is None:
            raise ValueError(f"{path}: no feature array 'x' (arrays: {', '.join(keys) or 'none'})")
        if target not in keys:
            hint = did_you_mean(target, keys) or f" (arrays: {', '.join(keys)})"
            raise ValueError(f"{path}: no label array {target!r}{hint}")
        x, y = archive[feature_key], archive[target]
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(
            f"{path}: {feature_key!r} must be a 2-D numeric array, got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"{path}: {target!r} must be 1-D with {len(x)} entries, got shape {y.shape}"
        )
    bad = np.argwhere(~np.isfinite(x.astype(np.float64)))
    if len(bad):
        row, column = bad[0]
        raise ValueError(f"{path}: {feature_key}[{row}, {column}] is not finite ({x[row, column]})")
    return x.astype(np.float64), [str(v) for v in y.tolist()]
