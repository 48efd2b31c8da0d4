"""RoI probe for AVA: time-pooled, RoIAligned layer taps -> spatial pool -> one Linear layer.

The V-JEPA paper evaluates AVA with "a linear classifier on the concatenation of the last block
and three intermediate blocks" (ViT-L: blocks 18, 20, 22, 24; ViT-H: 26, 28, 30, 32, counted from
1), which are the 0-based blocks depth-7, -5, -3, -1: `out_layers=(-7, -5, -3, -1)` for both.
Neither V-JEPA release ships AVA code, so where the paper is silent this mirrors the AVA RoI head
of SlowFast (facebookresearch/SlowFast, `slowfast/models/head_helper.py`, `ResNetRoIHead`, which
its MViT AVA models also use on their reshaped tokens):

- temporal average pool over the whole clip (`AvgPool3d([T, 1, 1])`): here a mean over t;
- RoIAlign to 7 x 7 (`DETECTION.ROI_XFORM_RESOLUTION: 7`) with `sampling_ratio=0` (adaptive:
  ceil(box size / 7) samples per bin and axis; torchvision reads any value <= 0 the same way) and
  `aligned=True` (`DETECTION.ALIGNED`, the default and the non-Caffe2 AVA configs' value);
- a max pool over the whole 7 x 7 output (`MaxPool2d(7, stride=1)`), optional dropout, one Linear.
  SlowFast initialises its Linear with N(0, 0.01); we keep PyTorch's default nn.Linear init, as the
  V-JEPA release does for its classifiers. The sigmoid (SlowFast's `HEAD_ACT: sigmoid` for AVA)
  is applied outside, by the loss.

The taps are used as the encoder returns them (each through the ViT's final LayerNorm, see
`encoders/vit.py`); there is no further normalisation, so the head is a linear classifier of the
pooled features (dropout aside, which is off at evaluation).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import roi_align

POOLS = ("max", "avg")
# SlowFast's RoIAlign: sampling_ratio 0 = adaptive (ceil(roi_size / output_size) per bin).
SAMPLING_RATIO = 0
# Normalised box coordinates may overshoot [0, 1] by rounding; more than this is a unit mistake
# (pixel boxes), which would otherwise silently read zeros from outside the feature map.
_BOX_TOLERANCE = 1e-3


def _check_box_shape(boxes: torch.Tensor) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 5:
        raise ValueError(f"roi_linear probe expects boxes (K, 5) = [batch index, x1, y1, x2, "
                         f"y2] normalised to [0, 1]; got shape {tuple(boxes.shape)}")


def check_boxes(boxes: torch.Tensor, batch: int) -> None:
    """Boxes (K, 5) `[batch index, x1, y1, x2, y2]` of a micro-batch of `batch` clips: integer
    indices in [0, batch), coordinates normalised to [0, 1], x1 <= x2 and y1 <= y2.

    Reads the values: call it on the CPU tensor before it is moved to the device."""
    _check_box_shape(boxes)
    if boxes.shape[0] == 0:
        return
    index, xy = boxes[:, 0].float(), boxes[:, 1:].float()
    bad_index, bad_range, bad_order = torch.stack([
        ((index != index.round()) | (index < 0) | (index >= batch)).any(),
        ((xy < -_BOX_TOLERANCE) | (xy > 1 + _BOX_TOLERANCE) | ~torch.isfinite(xy)).any(),
        ((xy[:, 2] < xy[:, 0]) | (xy[:, 3] < xy[:, 1])).any(),
    ]).tolist()
    if bad_index:
        raise ValueError(f"roi_linear probe: box batch indices must be integers in "
                         f"[0, {batch - 1}] (the clips of this batch); got "
                         f"{sorted(set(index.tolist()))}")
    if bad_range:
        raise ValueError(f"roi_linear probe: box coordinates must be normalised to [0, 1] of "
                         f"the frame (pixel boxes divided by width / height); got values in "
                         f"[{xy.min().item():.4g}, {xy.max().item():.4g}]")
    if bad_order:
        raise ValueError("roi_linear probe: boxes must be [x1, y1, x2, y2] with x1 <= x2 "
                         "and y1 <= y2")


class RoIProbe(nn.Module):
    """Layer taps (B, t*h*w, D * len(out_layers)) + boxes (K, 5) -> logits (K, num_classes).

    Tokens are in the ViT's patch order: t-major, then h, then w (`PatchEmbed3D` flattens the
    Conv3d output (B, D, t, h, w); image encoders concatenate frames, frame-major). The taps of
    one clip are concatenated on the channel axis by the trainer, in `out_layers` order.
    Boxes are `[batch index, x1, y1, x2, y2]` with coordinates normalised to [0, 1] of the frame.

    A box reads the tokens its RoIAlign samples interpolate: bilinear interpolation between token
    centres, so a box also reads the tokens next to it (within one token of its sampling points),
    never tokens farther away.
    """

    kind = "roi_linear"
    trainable = True

    def __init__(self, embed_dim: int, num_classes: int, *, token_grid: Sequence[int],
                 out_layers: Sequence[int] = (-7, -5, -3, -1), roi_size: int = 7,
                 pool: str = "max", dropout: float = 0.0, aligned: bool = True):
        super().__init__()
        grid = tuple(int(g) for g in token_grid)
        if len(grid) != 3 or min(grid) < 1:
            raise ValueError(f"roi_linear probe: token_grid must be the encoder's token grid (t, h, w) "
                             f"for one clip, e.g. encoder.spec.grid; got {grid}")
        out_layers = tuple(int(i) for i in out_layers)
        if not out_layers or len(set(out_layers)) != len(out_layers):
            raise ValueError(f"roi_linear probe: out_layers must be distinct block indices, "
                             f"e.g. [-7, -5, -3, -1]; got {list(out_layers)}")
        if pool not in POOLS:
            raise ValueError(f"roi_linear probe: pool must be one of {POOLS}, got {pool!r}")
        if int(roi_size) < 1:
            raise ValueError(f"roi_linear probe: roi_size must be >= 1, got {roi_size}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"roi_linear probe: dropout must be in [0, 1), got {dropout}")
        self.embed_dim = int(embed_dim)
        self.num_classes = int(num_classes)
        self.grid = grid
        self.out_layers = out_layers  # the trainer asks the encoder for these taps
        self.roi_size = int(roi_size)
        self.pool = pool
        self.aligned = bool(aligned)
        self.in_features = self.embed_dim * len(out_layers)
        self.dropout = nn.Dropout(float(dropout))
        self.linear = nn.Linear(self.in_features, self.num_classes)  # PyTorch default init

    def extra_repr(self) -> str:
        return (f"grid={self.grid}, out_layers={self.out_layers}, roi_size={self.roi_size}, "
                f"pool={self.pool!r}, aligned={self.aligned}")

    def feature_map(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, t*h*w, C) -> time-pooled map (B, C, h, w)."""
        t, h, w = self.grid
        if tokens.ndim != 3 or tokens.shape[1] != t * h * w or tokens.shape[2] != self.in_features:
            raise ValueError(
                f"roi_linear probe expects tokens (B, {t * h * w}, {self.in_features}): the token "
                f"grid {self.grid} (t*h*w = {t * h * w}) and {len(self.out_layers)} taps of width "
                f"{self.embed_dim} concatenated on the channel axis; got {tuple(tokens.shape)}. "
                f"Build the probe with the grid of the clips it sees "
                f"(encoder.spec.grid_for(frames, height, width)) and the encoder's embed_dim")
        b, _, c = tokens.shape
        fmap = tokens.transpose(1, 2).reshape(b, c, t, h, w)
        return fmap.mean(dim=2)  # time pooling, as SlowFast's temporal AvgPool3d over the clip

    def features(self, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """The pooled RoI features (K, C) the linear layer reads."""
        fmap = self.feature_map(tokens)
        # The values are checked where reading them stalls nothing: boxes on the CPU here;
        # boxes already on a device were checked on the CPU before the move (`check_boxes` in
        # the task kind), so a training step reads nothing back from the device.
        if boxes.device.type == "cpu":
            check_boxes(boxes, fmap.shape[0])
        else:
            _check_box_shape(boxes)
        _, h, w = self.grid
        # roi_align takes one spatial_scale; the map is h x w tokens, so scale x by w and y by h
        # here and pass 1.0 (a non-square grid needs two scales).
        scale = torch.tensor([1.0, w, h, w, h], device=boxes.device)
        rois = (boxes.float() * scale).to(fmap.dtype)  # roi_align wants the map's dtype
        out = roi_align(fmap, rois, output_size=self.roi_size, spatial_scale=1.0,
                        sampling_ratio=SAMPLING_RATIO, aligned=self.aligned)  # (K, C, r, r)
        return out.amax(dim=(2, 3)) if self.pool == "max" else out.mean(dim=(2, 3))

    def forward(self, tokens: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(self.features(tokens, boxes)))
