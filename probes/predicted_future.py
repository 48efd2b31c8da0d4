"""The head's input of V-JEPA 2's action anticipation: the frozen encoder's tokens of the clip
followed by the frozen predictor's tokens of frames ahead of it.

The same arithmetic as the release's `AnticipativeWrapper`
(facebookresearch/vjepa2, `evals/action_anticipation_frozen/modelcustom/
vit_encoder_predictor_concat_ar.py`; its EK100 configs: `num_output_frames: 2`, `num_steps: 1`):

    x = encoder(clip)                                       # (B, N, D), context = tokens 0..N-1
    steps = int64(anticipation_time * fps / tubelet)        # per sample, truncated
    first = N + grid**2 * steps                             # grid = resolution // patch
    n_pred = grid**2 * (max(num_output_frames, tubelet) // tubelet)
    target = first + arange(n_pred)                         # the next frames' token positions
    repeat num_steps: p = predictor(x, context, target); out = cat(out, p); x = cat(x[:, n_pred:], p)

so the head attends over N + num_steps * n_pred tokens. The predictor here is a
`encoders.predictors.FrozenPredictor` (`predict(context, context_index, target_index, grid)`),
given a token grid tall enough to hold the farthest target (a RoPE predictor's positions depend
on a token's (t, h, w) only, not on the grid's length; a sin-cos table predictor is refused, its
table being resampled to the grid). Equal to the release's wrapper on the same encoder and
predictor (0 difference, tests/fixtures/ek100/predicted_future_release.json). Like the release, the
target positions do not move between steps and the context positions stay 0..N-1.

`PredictedFuture` stands in for the encoder in the probe trainer (`probes.forward.encode_views`
hands it each clip's `anticipation_time`); `spec` and `checkpoint_info` are the encoder's.
"""
from __future__ import annotations

import torch
from torch import nn


class PredictedFuture(nn.Module):
    takes_anticipation_time = True

    def __init__(self, encoder: nn.Module, predictor: nn.Module, *, fps: float,
                 num_output_frames: int = 2, num_steps: int = 1):
        super().__init__()
        spec = encoder.spec
        if not getattr(predictor.spec, "rope", False):
            # A sin-cos table is resampled to the grid asked for, so a frame ahead of the clip
            # has no position of its own; the release anticipates with RoPE predictors only.
            raise ValueError(f"predictor of {predictor.spec.encoder!r} places tokens with a sin-cos "
                             f"table over its pretraining grid; predicting frames beyond the clip "
                             f"needs a RoPE predictor (V-JEPA 2 or 2.1)")
        if num_steps < 1 or num_output_frames < 1:
            raise ValueError(f"num_steps and num_output_frames must be >= 1, got {num_steps}, "
                             f"{num_output_frames}")
        self.encoder, self.predictor = encoder, predictor
        self.fps, self.num_steps = float(fps), int(num_steps)
        self.tubelet = int(spec.tubelet_size)
        self.num_output_frames = max(int(num_output_frames), self.tubelet)  # the release's max

    @property
    def spec(self):
        return self.encoder.spec

    @property
    def checkpoint_info(self):
        return self.encoder.checkpoint_info

    def target_index(self, anticipation_time: torch.Tensor, n: int, grid2: int) -> torch.Tensor:
        """(B, n_pred) token positions of the frames `anticipation_time` ahead."""
        steps = (anticipation_time * self.fps / self.tubelet).to(torch.int64)
        n_pred = grid2 * (self.num_output_frames // self.tubelet)
        first = n + grid2 * steps
        return torch.arange(n_pred, device=first.device)[None] + first[:, None]

    def forward(self, video: torch.Tensor, anticipation_time: torch.Tensor) -> torch.Tensor:
        if video.shape[-1] != video.shape[-2]:
            raise ValueError(f"the release's wrapper takes square clips (grid = crop // patch); got "
                             f"{video.shape[-2]}x{video.shape[-1]}")
        x = self.encoder(video)
        b, n, _ = x.shape
        t, h, w = self.spec.grid_for(video.shape[2], video.shape[-2], video.shape[-1])
        if t * h * w != n:
            raise ValueError(f"the encoder gave {n} tokens for a {t}x{h}x{w} grid")
        at = torch.as_tensor(anticipation_time, device=x.device).reshape(-1)
        if at.shape[0] != b:
            raise ValueError(f"{at.shape[0]} anticipation times for {b} clips")
        context = torch.arange(n, device=x.device)[None].expand(b, n)
        target = self.target_index(at, n, h * w)
        grid = (int(target.max()) // (h * w) + 1, h, w)
        out = x
        n_pred = target.shape[1]
        for _ in range(self.num_steps):
            pred = self.predictor.predict(x, context, target, grid).to(x.dtype)
            out = torch.cat([out, pred], dim=1)
            x = torch.cat([x[:, n_pred:], pred], dim=1)
        return out
