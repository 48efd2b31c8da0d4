"""Which planned runs of a launch are already recorded: the decision `harness run` makes before
it reads the weights (its `reused`), taken without loading an encoder, for every run of a sweep
(`harness.launch.plan_launch`)."""
from __future__ import annotations

import os
from pathlib import Path


def finished_record(cfg, hash_cache: dict | None = None) -> Path | None:
    """The record of the run `cfg` describes, if it has finished; None otherwise.

    The same decision `run_evaluation` makes before it reads the encoder (its `reused`), without
    loading the encoder: the run id from the planned protocol and the checkpoint's hash.
    `hash_cache` keeps checkpoint hashes across the runs of one sweep (a multi-GB file is hashed
    once per launch, not once per seed and task).
    """
    from common.digest import file_sha256
    from harness import identity
    from harness.config import to_container
    from harness.plan import plan_run
    from harness.runner import run_key

    c = to_container(cfg)
    if not c["resume"]:
        return None  # resume=false redoes the run whatever exists
    if c["task"].get("kind") == "voe":
        # As `run_voe` decides before it reads the weights; a pixel-target pretraining file is
        # recognised only once read (its protocol says so), so its job is submitted and finds
        # its record there.
        from harness import voe_run

        plan = voe_run.plan_voe(cfg)
        ident = _cached(hash_cache, ("ckpt", _file_key(c["checkpoint"]), c["random_init"],
                                     c["encoder"].get("name")),
                        lambda: identity.checkpoint_identity(plan.c))
        return identity.find_finished(Path(c["out"]) / "records", voe_run.run_key(plan, ident))
    plan = plan_run(cfg, estimate_only=True)
    ident = _cached(hash_cache, ("ckpt", _file_key(c["checkpoint"]), c["random_init"],
                                 c["encoder"].get("name")),
                    lambda: identity.checkpoint_identity(c))
    probe_sha = None
    if c.get("probe_checkpoint"):
        path = c["probe_checkpoint"]
        if not Path(path).is_file():
            raise FileNotFoundError(f"probe checkpoint not found: {path}")
        probe_sha = _cached(hash_cache, ("probe", _file_key(path)), lambda: file_sha256(path))
    key = run_key(plan, checkpoint=ident, probe_sha256=probe_sha)
    return identity.find_finished(Path(c["out"]) / "records", key)


def _file_key(path) -> tuple:
    if not path:
        return (None,)
    p = Path(os.path.expanduser(str(path)))
    try:
        st = p.stat()
    except OSError:
        return (str(p),)
    return (str(p.resolve()), st.st_size, st.st_mtime_ns)


def _cached(cache: dict | None, key, compute):
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]
