"""On-disk feature cache: a split's frozen-encoder tokens written once as memory-mapped fp16 files.

The frozen encoder's forward is the whole cost of an evaluation. Protocols without training
augmentation (linear probes, k-NN, low-shot, centre-crop image tasks) see the same tokens every
epoch and every run, so they are encoded once and read back from disk.

A cache entry is keyed by a content hash of everything that changes the tokens (`feature_key`):
a digest of the encoder's weights (`state_dict_digest`), the protocol fields that change what the
encoder sees (sampling, transform, resolution, frames, copies, the seed where clips are random,
the precision the encoder ran in) and the manifest's hash. A changed checkpoint, transform or
video list is another key, so stale features are never reused (CLIP_benchmark keys its cache
by model and dataset *names*, and silently reuses features after a preprocessing change).

Layout under `root`:

    <key>/             a complete entry: meta.json, tokens.f16, labels.i64, paths.txt
    <key>.partial/     an entry being written (or left by a killed writer): progress.json + files
    <key>.lock         fcntl lock held by the one process writing <key>

Rows are appended in the loader's order. Every `checkpoint_rows` rows (and on commit) the files
are fsync'ed and `progress.json` is replaced atomically with the rows, samples and micro-batches
done and a CRC-32 of every finished chunk of each file. A writer killed anywhere leaves
a `.partial` folder that `get` never reads; the next writer verifies its chunks, cuts the files
back to the last verified one and encodes only what is missing. The entry becomes complete in one
atomic step: `meta.json` is written into the partial folder, then the folder is renamed to
`<key>`. Every load re-checks the chunk checksums, so a damaged file is a clear error that names
it, never wrong numbers.

Modules: `keys` (what names an entry), `store` (the entries' files: `FeatureStore`,
`FeatureWriter`), `fill` (`cached_tokens` / `cached_copies`: a loader's split through the store).
"""
from __future__ import annotations

from probes.feature_store.fill import cached_copies, cached_tokens
from probes.feature_store.keys import (
    FeatureCacheError,
    feature_key,
    state_dict_digest,
    token_fields,
)
from probes.feature_store.store import FeatureStore, FeatureWriter

__all__ = ["FeatureCacheError", "FeatureStore", "FeatureWriter", "cached_copies", "cached_tokens",
           "feature_key", "state_dict_digest", "token_fields"]
