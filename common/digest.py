"""Canonical JSON and sha256: the one recipe behind every id the harness prints or stores."""
from __future__ import annotations

import hashlib
import json
import os


def canonical_json(obj) -> str:
    """Key-order independent, no whitespace; values JSON cannot hold are written as str()."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def json_digest(obj, length: int = 64) -> str:
    """The first `length` hex digits of sha256 over `canonical_json(obj)`."""
    return sha256_hex(canonical_json(obj))[:length]


def lines_digest(lines) -> str:
    """sha256 of lines joined by newlines (manifests, label maps, key lists)."""
    return sha256_hex("\n".join(lines))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
