"""Which files hold a checkpoint's weights, and its identity: the sha256 of the bytes loaded (torch-free).

A checkpoint is a weights file (`.pth`, `.pth.tar`, `.pt`, `.safetensors`) or a Hugging Face
folder (`config.json` beside `model.safetensors`, a sharded `model.safetensors.index.json`, or
`pytorch_model.bin`), which stands for its weights file(s).

Identity is decided on the bytes actually loaded: the loader reads each file once
(`read_once`), hashes those bytes and parses the same bytes, so a file replaced between the
hash and the load can never be recorded under the other file's hash. `checkpoint_sha256` gives the
same value without loading (it streams the files), for finding finished runs before building;
a caller that needs both compares it with `FrozenEncoder.checkpoint_info["sha256"]` afterwards.
"""
from __future__ import annotations

import json
from pathlib import Path

from common.digest import file_sha256, json_digest, sha256_hex

from .errors import CheckpointError

HF_CONFIG = "config.json"
HF_SINGLE = "model.safetensors"
HF_INDEX = "model.safetensors.index.json"
HF_LEGACY = "pytorch_model.bin"


def is_hf_folder(path) -> bool:
    """A Hugging Face model folder: a directory holding `config.json`."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / HF_CONFIG).is_file()


def weights_files(path) -> list[Path]:
    """The file(s) whose bytes are a checkpoint's weights (shards in name order for a sharded folder)."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / HF_SINGLE).is_file():
            return [path / HF_SINGLE]
        index = path / HF_INDEX
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{index} is not a safetensors shard index ({e})") from e
            files = [path / s for s in shards]
            missing = [f.name for f in files if not f.is_file()]
            if missing or not files:
                raise CheckpointError(f"{index} names shard(s) that are not in {path}: "
                                      f"{', '.join(missing) or '(none listed)'}")
            return files
        if (path / HF_LEGACY).is_file():
            return [path / HF_LEGACY]
        raise CheckpointError(f"checkpoint {path} is a folder without {HF_SINGLE} (or a sharded "
                              f"{HF_INDEX}, or {HF_LEGACY}); pass a weights file, or a Hugging Face "
                              f"folder saved with save_pretrained")
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    return [path]


def read_once(path) -> tuple[bytes, str]:
    """The file's bytes, read once, and the sha256 of exactly those bytes."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from e
    return data, sha256_hex(data)


def combined_sha256(hashes: list[tuple[Path, str]]) -> str:
    """One file: its sha256. Shards: the digest of their names and sha256s (order-free)."""
    if len(hashes) == 1:
        return hashes[0][1]
    return json_digest({"shards": {p.name: h for p, h in hashes}})


def checkpoint_sha256(checkpoint) -> str:
    """The sha256 that loading `checkpoint` (a file or a Hugging Face folder) records, computed
    without loading it (the files are streamed, never parsed)."""
    return combined_sha256([(f, file_sha256(f)) for f in weights_files(checkpoint)])


def safetensors_header(data: bytes, path) -> dict:
    """The JSON header of a safetensors file's bytes (tensor names, dtypes, shapes, metadata)."""
    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 or n > len(data) - 8:
            raise ValueError(f"header of {n} bytes in a file of {len(data)}")
        header = json.loads(data[8:8 + n])
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
        return header
    except ValueError as e:
        raise CheckpointError(f"cannot read safetensors checkpoint {path}: it is truncated or corrupt ({e})") from e


def weight_names(checkpoint) -> list[str]:
    """Tensor names of a checkpoint's weights, read from safetensors headers or a shard index
    without loading tensors; a `pytorch_model.bin` is loaded (weights_only) to list its keys."""
    names: list[str] = []
    for f in weights_files(checkpoint):
        if f.name.endswith(".safetensors"):
            with open(f, "rb") as fh:
                head = fh.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else 0
                header = safetensors_header(head + fh.read(n), f)
            names += [k for k in header if k != "__metadata__"]
        else:
            import torch

            obj = torch.load(f, map_location="meta", weights_only=True)
            names += [str(k) for k in obj] if isinstance(obj, dict) else []
    return names
