"""The run's own settings: the top-level keys of harness/configs/run.yaml as a dataclass that
checks itself (types and ranges declared on the fields, read by the override check too)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from common.fields import bounded, check_ranges


@dataclass(frozen=True)
class RunSettings:
    """The top-level keys of harness/configs/run.yaml, each checked once, here."""

    device: str
    seed: int = bounded(low=0)
    out: Path = Path("runs")
    resume: bool = True
    progress: bool = True
    checkpoint: str | None = None
    checkpoint_key: str | None = None
    trust_checkpoint: bool = False
    random_init: bool = False
    probe_checkpoint: str | None = None
    label: str | None = None
    micro_batch_size: int | None = bounded(None, low=1)
    eval_batch_size: int | None = bounded(None, low=1)
    encoder_chunk: int | None = bounded(None, low=1)
    cache_features: bool | Literal["auto"] = "auto"   # auto: the task's default
    feature_store: Path | None = None                 # None: cached tokens stay in memory
    state_save_every_s: float = bounded(300.0, low=0, why="0: at every step")
    # torch's intra-op threads for the run; auto: 1 on CPU with in-process loading, else
    # torch's default (harness.runner.intra_op_threads says why)
    torch_threads: int | Literal["auto"] = bounded("auto", low=1)

    def __post_init__(self):
        for name in ("seed", "micro_batch_size", "eval_batch_size", "encoder_chunk"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool)):
                raise ValueError(f"{name} must be an integer, got {v!r}")
        if not (isinstance(self.cache_features, bool) or self.cache_features == "auto"):
            raise ValueError(f"cache_features must be true, false or auto, got "
                             f"{self.cache_features!r}")
        if self.torch_threads != "auto" and (not isinstance(self.torch_threads, int)
                                             or isinstance(self.torch_threads, bool)):
            raise ValueError(f"torch_threads must be an integer or auto, got "
                             f"{self.torch_threads!r}")
        if isinstance(self.state_save_every_s, bool) or \
                not isinstance(self.state_save_every_s, (int, float)):
            raise ValueError(f"state_save_every_s must be a number of seconds, got "
                             f"{self.state_save_every_s!r}")
        check_ranges(self)

    @classmethod
    def from_config(cls, c: dict) -> "RunSettings":
        return cls(device=str(c["device"]), seed=c["seed"],
                   out=Path(os.path.expanduser(str(c["out"]))), resume=bool(c["resume"]),
                   progress=bool(c["progress"]), checkpoint=_text(c.get("checkpoint")),
                   checkpoint_key=_text(c.get("checkpoint_key")),
                   trust_checkpoint=bool(c.get("trust_checkpoint")),
                   random_init=bool(c["random_init"]),
                   probe_checkpoint=_text(c.get("probe_checkpoint")), label=_text(c.get("label")),
                   micro_batch_size=c.get("micro_batch_size"),
                   eval_batch_size=c.get("eval_batch_size"), encoder_chunk=c.get("encoder_chunk"),
                   cache_features=c["cache_features"], feature_store=_store_root(c),
                   state_save_every_s=c.get("state_save_every_s", 300.0),
                   torch_threads=c.get("torch_threads", "auto"))


def _text(value) -> str | None:
    return None if value is None else str(value)


def _store_root(c: dict) -> Path | None:
    """Where `feature_store` keeps cached tokens: None when off (the default)."""
    where = c.get("feature_store", "off")
    if where in (None, False) or str(where).lower() in ("off", "false", "none"):
        return None
    if where is True or str(where).lower() == "auto":
        return Path(os.path.expanduser(str(c["out"]))) / "features"
    return Path(os.path.expanduser(str(where)))
