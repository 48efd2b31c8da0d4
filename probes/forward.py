"""The forward path: a micro-batch -> its clips on the device -> frozen encoder tokens -> the probe.

Micro-batches are the dicts of `tasks.collate_clips`: `video` (B, S, V, 3, T, H, W) floats (S
temporal segments, V spatial views), or uint8 `frames` that the data object's `finish(batch,
device)` turns into that on the compute device, or the `tokens` (B, V, L, D) of a feature cache;
`label` (B,) long; `failures` [(path, error)].

Per clip the encoder returns tokens (B, N, D). The tokens of all S segments of one view are
concatenated to (B, S*N, D) and go through the probe in one pass (the release's "attend across
segments"); at evaluation the views are merged by the task kind (the mean of their softmaxes).
Training uses view 0 only (training loaders give V = 1).

On CUDA with `bf16` the frozen encoder's weights are cast to bfloat16 once and its tokens stay
bfloat16; the probe runs under bf16 autocast with fp32 weights. (The release's flag
`use_bfloat16` actually autocasts to float16 with a GradScaler; we run bf16, which needs no
scaler, and record the precision that really ran.) On CPU everything is fp32.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from probes.kinds import Classification, Kind


def resolve_precision(device, bf16: bool) -> str:
    """The precision a run really uses: bf16 only on CUDA (CPU bf16 is slow on CPUs without bf16
    units and would make CPU numbers differ from the fp32 reference); never fp16."""
    return "bf16" if bf16 and torch.device(device).type == "cuda" else "fp32"


def autocast_factory(device: torch.device, precision: str) -> Callable:
    """A zero-argument factory of the precision context (a fresh one per use)."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def prepare_encoder(encoder: nn.Module, device: torch.device, precision: str) -> nn.Module:
    # Frozen weights are cast once (not per forward by autocast) in bf16 runs.
    encoder.to(device).eval()
    if precision == "bf16":
        encoder.to(torch.bfloat16)
    return encoder


def encode_views(encoder: nn.Module, video: torch.Tensor, *, chunk: int | None = None,
                 autocast: Callable = contextlib.nullcontext,
                 layers: tuple[int, ...] | None = None,
                 anticipation_time: torch.Tensor | None = None) -> torch.Tensor:
    """(B, S, V, 3, T, H, W) -> tokens (B, V, S*N, D): segments concatenated per view.

    The tokens keep the encoder's dtype (bfloat16 when its weights were cast): the segment
    tokens of a whole micro-batch are never copied to fp32. `chunk`: clips per encoder call
    (default all the micro-batch's). `layers`: block indices whose (normed) outputs are
    concatenated on the channel axis instead of the last block's (AVA's probe reads four
    blocks: D becomes 4 x the width). An encoder that `takes_anticipation_time`
    (`probes.predicted_future.PredictedFuture`) gets each clip's sample's `anticipation_time`
    (B,) beside it."""
    if video.ndim != 7:
        raise ValueError(f"expected video (B, S, V, 3, T, H, W), got {tuple(video.shape)}")
    b, s, v = video.shape[:3]
    clips = video.flatten(0, 2)  # S and V flattened into the batch: one encoder call per chunk
    dtype = next((p.dtype for p in encoder.parameters()), clips.dtype)
    if dtype.is_floating_point and clips.dtype != dtype:
        clips = clips.to(dtype)
    chunk = chunk or b * s * v
    future = getattr(encoder, "takes_anticipation_time", False)
    if future and (anticipation_time is None or layers):
        raise ValueError("an encoder with the predictor's future tokens needs each clip's "
                         "anticipation_time and reads the last block only (no out_layers)")
    with torch.no_grad(), autocast():
        if future:  # (B,) per sample -> per clip: its S segments and V views share it
            times = torch.as_tensor(anticipation_time).to(clips.device).repeat_interleave(s * v)
            parts = [encoder(c, at) for c, at in zip(clips.split(chunk), times.split(chunk))]
        elif layers:
            parts = [torch.cat(encoder(c, out_layers=list(layers)), dim=-1)
                     for c in clips.split(chunk)]
        else:
            parts = [encoder(c) for c in clips.split(chunk)]
    tokens = torch.cat(parts)
    if tokens.ndim != 3 or tokens.shape[0] != b * s * v:
        raise ValueError(f"encoder returned {tuple(tokens.shape)} for {b * s * v} clips; "
                         f"expected tokens (clips, N, D)")
    n, d = tokens.shape[1:]
    return tokens.reshape(b, s, v, n, d).transpose(1, 2).reshape(b, v, s * n, d)


def probe_layers(probe: nn.Module) -> tuple[int, ...] | None:
    """The encoder blocks a probe reads (`out_layers`, e.g. AVA's four); None: the last block's
    output. A grid's heads read the same tokens."""
    heads = getattr(probe, "heads", None)
    head = heads[0] if heads is not None and len(heads) else probe
    layers = getattr(head, "out_layers", None)
    return tuple(int(i) for i in layers) if layers else None


@dataclass
class MicroTokens:
    """One micro-batch ready for the probe: `tokens` (B, V, L, D) (None when nothing in it
    loaded), the kind's `target`, the head's other `inputs` (boxes), the `failures` met and the
    `batch` it came from."""

    tokens: torch.Tensor | None
    target: torch.Tensor | None
    failures: list
    batch: dict
    inputs: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Samples that loaded."""
        return 0 if self.tokens is None else int(self.tokens.shape[0])


class TokenReader:
    """Micro-batch -> `MicroTokens`: clips finished on the device and encoded by the frozen
    encoder, or the cached tokens the batch carries. `train` keeps view 0 only.

    `reader.logits(micro)` runs the probe on them: (B, V, [H,] C), or (K, 1, [H,] C) for
    detection's boxes."""

    def __init__(self, encoder: nn.Module, probe: nn.Module, *, kind: Kind, device,
                 precision: str, encoder_chunk: int | None = None,
                 finish: Callable | None = None, train: bool):
        self.encoder, self.probe, self.kind = encoder, probe, kind
        self.device = torch.device(device)
        self.autocast = autocast_factory(self.device, precision)
        self.chunk, self.finish, self.train = encoder_chunk, finish, train
        self.layers = probe_layers(probe)

    def clips(self, batch: dict):
        """(clips or cached tokens on the device, target, failures); None, None, failures when
        nothing in the batch loaded. The target is the kind's (class indices by default;
        multi-hot rows; per-box rows)."""
        failures = list(batch.get("failures") or [])
        if "tokens" in batch:
            video = batch["tokens"]
        elif "frames" in batch:
            if self.finish is None:
                raise ValueError("batch holds uint8 frames but the data object has no finish()")
            video = self.finish(batch, self.device)
        else:
            video = batch.get("video")
        if video is None or video.shape[0] == 0:
            return None, None, failures
        label = torch.as_tensor(batch["label"]).long()
        if label.shape[0] != video.shape[0]:
            raise ValueError(f"batch has {video.shape[0]} videos but {label.shape[0]} labels")
        target = self.kind.target(batch, self.device)
        return video.to(self.device, non_blocking=True), target, failures

    def __call__(self, batch: dict) -> MicroTokens:
        video, target, failures = self.clips(batch)
        if video is None:
            return MicroTokens(None, None, failures, batch)
        if "tokens" in batch:  # cached features: (B, V, L, D), already encoded
            tokens = video[:, :1] if self.train else video
        else:
            tokens = encode_views(self.encoder, video[:, :, :1] if self.train else video,
                                  chunk=self.chunk, autocast=self.autocast, layers=self.layers,
                                  anticipation_time=batch.get("anticipation_time"))
        return MicroTokens(tokens, target, failures, batch,
                           self.kind.probe_inputs(batch, self.device))

    def logits(self, micro: MicroTokens) -> torch.Tensor:
        return self.kind.forward(self.probe, micro.tokens, micro.inputs, self.autocast)


CLASSIFICATION = Classification()
