"""The surprise evaluation (no training): how badly a JEPA predictor predicts a video's future.

As in Garrido et al. 2025 (`facebookresearch/jepa-intuitive-physics`,
`evaluation_code/evals/intuitive_physics/eval.py`, `extract_losses`):

* the video (`(V, 3, T, H, W)`, normalised; its frames already sampled every `frame_step`) is cut
  into sliding windows of `frames_per_window` frames, starting every `stride` frames while the
  window fits (`Tensor.unfold`);
* for each context length C (frames): the context encoder (the checkpoint's `encoder`) sees only
  the tokens of the window's first C frames (dropped after the position embedding, as in
  pretraining), the predictor predicts the tokens of the remaining frames, and the target encoder
  (`target_encoder`) encodes the whole window, layer-normed over the feature dim (the release's
  targets; `normalize_targets`);
* a predictor that reads several encoder layers (V-JEPA 2.1: `spec.input_layers`) gets those
  layers' outputs concatenated on channels as context, and its targets are the target encoder's
  same layers, each layer-normed on its own (2.1's `forward_target`);
* surprise of a window = mean L1 (or L2: mean squared error) over the predicted tokens and
  channels; of a video, the mean and the max over its windows, per context length, and the
  elementwise minimum over context lengths (the authors' "Filtered").

Departures from the authors' code, each a defect of theirs: the token grid is the input's (they
hard-code 224 px and 16 px patches in `get_time_masks`); windows are independent items, so any
batch size gives batch 1's numbers (theirs breaks above 1); pixel targets compare the
predictor's output with VideoMAE's normalised pixels of the future frames (for VideoMAE they
zero the predictions).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

LOSSES = ("l1", "l2")
TARGETS = ("latent", "pixels")


@dataclass(frozen=True)
class SurpriseProtocol:
    """Every setting that changes a surprise number (the evaluation's protocol)."""

    frames_per_window: int = 16
    stride: int = 2
    context_frames: tuple[int, ...] = (2, 4, 6, 8, 10)
    frame_step: int = 2                    # the loader's temporal subsampling (recorded; applied by the loader)
    loss: str = "l1"
    normalize_targets: bool = True          # layer-norm the target encoder's tokens
    normalize_context: bool = False         # layer-norm the context encoder's tokens (authors' option)
    # predictor mask token; None: the predictor's own (0 as the authors' wrapper passes for
    # V-JEPA and V-JEPA 2, 1 for 2.1, the one its training uses)
    mask_index: int | None = None
    target: str = "latent"                  # latent (target encoder) | pixels (tubelets, VideoMAE's space)
    context_key: str = "encoder"            # checkpoint entries of the two encoders
    target_key: str = "target_encoder"
    pixel_normalize: bool = True            # pixels: standardise each tubelet (VideoMAE normlize_target)

    def __post_init__(self):
        object.__setattr__(self, "context_frames", tuple(int(c) for c in self.context_frames))
        if self.frames_per_window < 2 or self.stride < 1 or self.frame_step < 1:
            raise ValueError("frames_per_window >= 2, stride >= 1 and frame_step >= 1 are needed")
        if not self.context_frames:
            raise ValueError("context_frames needs at least one context length")
        bad = [c for c in self.context_frames if not 0 < c < self.frames_per_window]
        if bad:
            raise ValueError(f"context lengths {bad} leave nothing to predict in a {self.frames_per_window}-frame "
                             f"window (each must be in 1..{self.frames_per_window - 1})")
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: one of {', '.join(LOSSES)}")
        if self.target not in TARGETS:
            raise ValueError(f"target {self.target!r}: one of {', '.join(TARGETS)}")
        if self.mask_index is not None and int(self.mask_index) < 0:
            raise ValueError(f"mask_index must be None or >= 0, got {self.mask_index}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["context_frames"] = list(self.context_frames)
        return d


def window_starts(num_frames: int, protocol: SurpriseProtocol) -> list[int]:
    """First frames of the windows `Tensor.unfold(frames_per_window, stride)` makes."""
    f = protocol.frames_per_window
    if num_frames < f:
        raise ValueError(f"a video of {num_frames} frames is shorter than one {f}-frame window")
    return list(range(0, num_frames - f + 1, protocol.stride))


def split_indices(grid, context_frames: int, tubelet: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices (1-D) of the first `context_frames` frames and of the rest, on `grid`."""
    t, h, w = grid
    if context_frames % tubelet:
        raise ValueError(f"context of {context_frames} frames is not a multiple of the tubelet size {tubelet}")
    n_ctx = (context_frames // tubelet) * h * w
    every = torch.arange(t * h * w, device=device)
    return every[:n_ctx], every[n_ctx:]


@dataclass
class SurpriseModels:
    """What one surprise evaluation runs: two encoders (`FrozenEncoder`) and a `FrozenPredictor`.

    `target_encoder` may be None for a pixel-target predictor."""

    context_encoder: object
    predictor: object
    target_encoder: object | None = None


def _grid(encoder, clip: torch.Tensor) -> tuple[int, int, int]:
    spec = encoder.spec
    if spec.modality != "video":
        raise ValueError(f"encoder {spec.name!r} is an image encoder; the surprise evaluation predicts future "
                         "frames and needs a video encoder and predictor")
    _, _, t, h, w = clip.shape
    p, tub = spec.patch_size, spec.tubelet_size
    if h % p or w % p or t % tub:
        raise ValueError(f"clip {t}x{h}x{w} is not a multiple of tubelet {tub} and patch {p}")
    return (t // tub, h // p, w // p)


def encoder_tokens(encoder, clips: torch.Tensor, masks: torch.Tensor | None, layers, normalize: bool) -> torch.Tensor:
    """What a predictor reads from `encoder` (and predicts of the target encoder): its output, or
    with `layers` (the predictor's `spec.input_layers`) those blocks' normed outputs concatenated
    on channels; `normalize` layer-norms each part over its own channels."""
    kwargs = {} if masks is None else {"masks": masks}
    if layers:
        parts = encoder.backbone(clips, out_layers=list(layers), **kwargs)
    else:
        parts = [encoder.backbone(clips, **kwargs)]
    if normalize:
        parts = [F.layer_norm(p, (p.size(-1),)) for p in parts]
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def _window_losses(models: SurpriseModels, clips: torch.Tensor, protocol: SurpriseProtocol) -> torch.Tensor:
    """Surprise (B, len(context_frames)) of a batch of windows (B, 3, F, H, W)."""
    from .jepa.model import pixel_targets

    enc, pred = models.context_encoder, models.predictor
    grid = _grid(enc, clips)
    b = clips.shape[0]
    # The one question surprise asks the predictor: which encoder layers it reads (a decoder
    # without the field reads the output).
    layers = tuple(getattr(pred.spec, "input_layers", ()))
    if protocol.target == "latent":
        if models.target_encoder is None:
            raise ValueError("latent targets need a target encoder")
        h = encoder_tokens(models.target_encoder, clips, None, layers, protocol.normalize_targets)
    else:
        pixels = clips.float()
        if protocol.pixel_normalize:  # VideoMAE standardises tubelets of the un-normalised clip
            shape = (1, -1, 1, 1, 1)
            pixels = pixels * torch.tensor(enc.spec.std, device=clips.device).view(shape) \
                + torch.tensor(enc.spec.mean, device=clips.device).view(shape)
        h = pixel_targets(pixels, enc.spec.patch_size, enc.spec.tubelet_size, normalize=protocol.pixel_normalize)
    out = []
    for c in protocol.context_frames:
        ctx, tgt = split_indices(grid, c, enc.spec.tubelet_size, device=clips.device)
        ctx_b, tgt_b = ctx.expand(b, -1), tgt.expand(b, -1)
        z = encoder_tokens(enc, clips, ctx_b, layers, protocol.normalize_context)
        p = pred.predict(z, ctx_b, tgt_b, grid, mask_index=protocol.mask_index)
        target = h[:, tgt]
        if p.shape != target.shape:
            raise ValueError(f"predictor output {tuple(p.shape)} does not match targets {tuple(target.shape)} "
                             f"(a {pred.spec.target}-target predictor with target={protocol.target!r}?)")
        err = (p.float() - target.float()).abs() if protocol.loss == "l1" else (p.float() - target.float()) ** 2
        out.append(err.mean(dim=(1, 2)))
    return torch.stack(out, dim=1)


@torch.no_grad()
def surprise_curves(models: SurpriseModels, videos: torch.Tensor, protocol: SurpriseProtocol,
                    batch_size: int = 8) -> torch.Tensor:
    """Per-window surprise `(V, len(context_frames), n_windows)` of videos `(V, 3, T, H, W)`.

    Windows are scored `batch_size` at a time; each window is its own item, so the numbers do
    not depend on `batch_size`."""
    if videos.ndim != 5:
        raise ValueError(f"videos must be (V, 3, T, H, W), got {tuple(videos.shape)}")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    starts = window_starts(videos.shape[2], protocol)
    f = protocol.frames_per_window
    items = [(v, s) for v in range(videos.shape[0]) for s in starts]
    losses = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        clips = torch.stack([videos[v, :, s:s + f] for v, s in chunk])
        losses.append(_window_losses(models, clips, protocol))
    out = torch.cat(losses, dim=0)                        # (V * n_windows, n_ctx), window-major per video
    return out.reshape(videos.shape[0], len(starts), -1).permute(0, 2, 1).contiguous()


def video_scores(curves: torch.Tensor, protocol: SurpriseProtocol) -> list[dict]:
    """Per video: for each context length and for `min` (elementwise minimum over context lengths,
    the authors' "Filtered"), the mean and max of its window surprises."""
    out = []
    filtered = curves.min(dim=1).values
    for v in range(curves.shape[0]):
        row = {}
        for i, c in enumerate(protocol.context_frames):
            row[str(c)] = {"mean": float(curves[v, i].mean()), "max": float(curves[v, i].max()),
                           "windows": [float(x) for x in curves[v, i]]}
        row["min"] = {"mean": float(filtered[v].mean()), "max": float(filtered[v].max()),
                      "windows": [float(x) for x in filtered[v]]}
        out.append(row)
    return out


def load_models(name: str, checkpoint=None, *, random_init: bool = False, seed: int = 0,
                trust_checkpoint: bool = False, predictor_overrides=None,
                **encoder_overrides) -> tuple[SurpriseModels, str]:
    """The models the surprise evaluation of encoder entry `name` runs, and their target kind.

    JEPA entries (vjepa, vjepa2, vjepa2_1): the checkpoint's `encoder` (context),
    `target_encoder` (targets) and `predictor`; a pixel-target predictor (`harness pretrain`
    with `target: pixels`) gives "pixels"; a distilled V-JEPA 2.1 predictor (its teacher's
    features, which the file does not hold) is an error. VideoMAE entries: the pretraining
    file's encoder and decoder ("pixels"). Anything else is one error saying what the encoder
    supports."""
    from .errors import CheckpointError
    from .frozen import from_config
    from .predictors import FAMILY_DEFAULTS, build_predictor
    from .registry import compose
    from .videomae_decoder import build_videomae_decoder

    cfg = compose(name, **encoder_overrides)
    family = cfg.get("family")
    common = dict(trust_checkpoint=trust_checkpoint, **encoder_overrides)

    def build(entry, weights=None, *, checkpoint_key=None, trust_checkpoint=False, random_init=False, seed=None,
              **overrides):
        return from_config(compose(entry, **overrides), weights, checkpoint_key=checkpoint_key,
                           trust_checkpoint=trust_checkpoint, random_init=random_init, seed=seed)
    if family == "videomae":
        if random_init or checkpoint is None:
            raise ValueError(f"pixel surprise of {name!r} needs its VideoMAE pretraining checkpoint (with the decoder)")
        enc = build(name, checkpoint, **common)
        return SurpriseModels(enc, build_videomae_decoder(name, checkpoint, **common)), "pixels"
    if family not in FAMILY_DEFAULTS or cfg["modality"] != "video":
        raise CheckpointError(
            f"encoder {name!r} (family {family}, {cfg['modality']}) has neither a JEPA predictor nor a VideoMAE "
            f"decoder, so it cannot be scored by surprise; it supports the frozen-probe evaluations "
            f"(`harness run`). Surprise supports video entries of the families vjepa, vjepa2 and vjepa2_1 (with their "
            f"pretraining checkpoint's predictor) and videomae (a pretraining checkpoint with its decoder)")
    if random_init:
        enc = build(name, random_init=True, seed=seed, **encoder_overrides)
        pred = build_predictor(name, random_init=True, seed=seed + 1, predictor_overrides=predictor_overrides,
                               **encoder_overrides)
        return SurpriseModels(enc, pred, enc), pred.spec.target
    pred = build_predictor(name, checkpoint, predictor_overrides=predictor_overrides, **common)
    if pred.spec.target == "teacher":
        raise CheckpointError(
            f"the predictor in {checkpoint} was distilled: it predicts {pred.spec.out_dim}-wide features of the "
            f"teacher {name!r} was distilled from (V-JEPA 2.1's ViT-G), not {name!r}'s own, and the file holds no "
            f"teacher to compute them; surprise needs a self-supervised predictor and its target encoder (the "
            f"V-JEPA 2.1 ViT-g and ViT-G files: vjepa2_1_vitg_384, vjepa2_1_vitgigantic_384)")
    ctx = build(name, checkpoint, checkpoint_key="encoder", **common)
    if pred.spec.target == "pixels":
        return SurpriseModels(ctx, pred), "pixels"
    return SurpriseModels(ctx, pred, build(name, checkpoint, checkpoint_key="target_encoder", **common)), "latent"
