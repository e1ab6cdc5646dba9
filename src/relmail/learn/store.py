"""Model files: skops payloads with a JSON sidecar, versioned per message.

``models/<message>/v0001.skops`` holds only scikit-learn objects, floats and
dicts (never relmail classes); ``v0001.json`` beside it holds the version,
creation time, training date range, metrics, the feature spec and the
sha256 of the ``.skops`` file.

Loading never unpickles: the sidecar's checksum must match the file (so a
changed byte is refused), and every type skops reports as untrusted must be
on :data:`ALLOWED_TYPES`, an explicit list of the few scikit-learn internals
relmail's estimators are made of. Anything else is refused with
:class:`~relmail.errors.ModelError` before a single object is built.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError

if TYPE_CHECKING:
    from ..project import Project

FORMAT = 1
#: Types outside skops's default trust that relmail's estimators contain.
ALLOWED_TYPES = frozenset(
    {
        "numpy.dtype",
        "sklearn.calibration._CalibratedClassifier",
        "sklearn.calibration._SigmoidCalibration",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
        "sklearn._loss.loss.HalfBinomialLoss",
        "sklearn._loss.loss.HalfSquaredError",
        "sklearn._loss.link.LogitLink",
        "sklearn._loss.link.IdentityLink",
        "sklearn._loss.link.Interval",
        "sklearn._loss._loss.CyHalfBinomialLoss",
        "sklearn._loss._loss.CyHalfSquaredError",
        # SplineTransformer (the curved numeric columns of linear models):
        # its B-spline knots and coefficients, and the array constructor it names.
        "scipy.interpolate._bsplines.BSpline",
        "scipy._lib.array_api_compat.numpy._aliases.asarray",
    }
)
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_VERSION = re.compile(r"^v(\d{4,})\.json$")


def models_dir(project: Project, folder: str | os.PathLike | None = None) -> Path:
    """``models/`` in the project, or ``[model] dir`` from ``relmail.toml``, or ``folder`` when given.

    A relative folder is inside the project; ``folder`` lets an experiment
    train into a folder of its own instead of stacking versions on the
    project's models.
    """
    folder = folder if folder is not None else project.settings.section("model").get("dir", "models")
    path = Path(folder)
    return path if path.is_absolute() else project.root / path


def _check_key(key: str) -> str:
    if not _KEY.match(key or ""):
        raise ModelError(f"'{key}' is not a valid model name (letters, digits, '.', '_', '-')")
    return key


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def versions(root: Path, key: str) -> list[int]:
    folder = root / _check_key(key)
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _VERSION.match(p.name)))


def save(root: Path, key: str, payload: dict, meta: dict, replace: bool = False) -> Path:
    """Write the next version of model ``key`` (with ``replace``, over the newest); returns the sidecar path."""
    import skops.io as sio

    folder = root / _check_key(key)
    folder.mkdir(parents=True, exist_ok=True)
    have = versions(root, key)
    version = have[-1] if replace and have else (have or [0])[-1] + 1
    meta_path = folder / f"v{version:04d}.json"
    if replace:
        # The sidecar goes first: while the payload is rewritten, readers see
        # the previous version (or none), never a sidecar whose checksum is stale.
        meta_path.unlink(missing_ok=True)
    model_path = folder / f"v{version:04d}.skops"
    tmp = model_path.with_suffix(".skops.tmp")
    sio.dump(payload, tmp)
    os.replace(tmp, model_path)
    sidecar = {
        **meta,
        "format": FORMAT,
        "key": key,
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "file": model_path.name,
        "sha256": _sha256(model_path),
    }
    # The sidecar is written last: a version without one is never loaded.
    meta_path.write_text(json.dumps(sidecar, indent=2, default=str), encoding="utf-8")
    return meta_path


def read_meta(root: Path, key: str, version: int | None = None) -> dict | None:
    """The sidecar of a version (default: the newest), or None if there is no model."""
    have = versions(root, key)
    if not have:
        return None
    version = version or have[-1]
    path = root / key / f"v{version:04d}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model version") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable model sidecar ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: model format {meta.get('format')!r}, this relmail reads format {FORMAT}; retrain with 'relmail model train'")
    # The folder says which message a model serves and where its payload is, whatever the sidecar
    # was written as: a model copied to another folder or project loads the file beside its sidecar.
    expected = path.with_suffix(".skops").name
    if meta.get("file") != expected:
        raise ModelError(f"{path}: field 'file': names {meta.get('file')!r}, but the payload of this sidecar is {expected}; "
                         f"copy a model's .json and .skops files together, under the same version name")
    if meta.get("key") != key:
        meta["trained_as"] = meta.get("key")
        meta["key"] = key
    return meta


def load_payload(root: Path, meta: dict) -> Any:
    """The stored objects, after the checksum and trusted-type checks."""
    import skops.io as sio

    path = root / meta["key"] / meta["file"]
    if not path.is_file():
        raise ModelError(f"{path}: model file missing")
    if _sha256(path) != meta.get("sha256"):
        raise ModelError(f"{path}: checksum does not match its sidecar; the file was changed after training, refusing to load it")
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as exc:  # skops raises several kinds for a broken archive
        raise ModelError(f"{path}: not a readable skops model file ({exc.__class__.__name__})") from None
    refused = sorted(set(untrusted) - ALLOWED_TYPES)
    if refused:
        raise ModelError(f"{path}: model file contains untrusted types {', '.join(refused)}; refusing to load it")
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as exc:
        raise ModelError(f"{path}: model file cannot be loaded ({exc.__class__.__name__}: {exc})") from None


def newest_models(root: Path, messages=None) -> list[dict]:
    """The newest sidecar of each model of ``messages`` (default: all), or :class:`ModelError` naming what is missing."""
    metas = [m for m in list_models(root) if not messages or m["key"] in messages]
    missing = sorted(set(messages or []) - {m["key"] for m in metas})
    if missing:
        raise ModelError(f"no trained model for {', '.join(missing)}; run 'relmail model train' first")
    if not metas:
        raise ModelError("no trained models; run 'relmail model train' first")
    return metas


def list_models(root: Path) -> list[dict]:
    """The newest sidecar of every model under ``root``."""
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and _KEY.match(p.name)):
        meta = read_meta(root, folder.name)
        if meta is not None:
            out.append(meta)
    return out
