"""Load the shared protocol vectors at test time.

The frames come from third-party projects whose licences restrict copying (wb-mqtt-serial's "WB
License" among them), so they stay in the shared folder and are read from there, never copied into
this repository. Location: ``<repo>/../shared/vectors``, overridable with ``POLLERD_VECTORS``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

VECTORS_ENV = "POLLERD_VECTORS"


def vectors_dir() -> Path:
    env = os.environ.get(VECTORS_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "vectors"


def load_vectors(protocol: str) -> list[dict[str, Any]] | None:
    """The entries of ``<vectors>/<protocol>/vectors.json``, or None when the file is absent."""
    path = vectors_dir() / protocol / "vectors.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of vector entries")
    return data


def missing_reason(protocol: str) -> str:
    return (f"protocol vectors not found at {vectors_dir() / protocol / 'vectors.json'} "
            f"(set {VECTORS_ENV} to the shared vectors folder)")


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def vector_params(protocol: str, predicate=lambda entry: True) -> list[Any]:
    """Entries as ``pytest.param`` with their ids; one skipped param with the reason when the
    vectors are absent, so the skip is visible instead of an empty parameter set."""
    entries = load_vectors(protocol)
    if entries is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason=missing_reason(protocol)), id="no-vectors")]
    return [pytest.param(e, id=e.get("id", str(i))) for i, e in enumerate(entries) if predicate(e)]


def require_vectors(protocol: str) -> list[dict[str, Any]]:
    """All entries, or skip the calling test with a clear reason."""
    entries = load_vectors(protocol)
    if entries is None:
        pytest.skip(missing_reason(protocol))
    return entries
