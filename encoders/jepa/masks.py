"""Mask generators for JEPA pretraining: which tokens the context encoder sees, which are predicted.

A generator turns a batch size and a `torch.Generator` into a `MaskBatch`: sorted token indices
of the context (what the encoder is given) and of one or more target sets (what the predictor
must fill in). Token indices follow the ViT's token order: `t * (h * w) + row * w + col`.

Facts from the V-JEPA release (`src/masks/multiblock3d.py`), kept here:
- the block *size* (temporal extent, spatial scale, aspect ratio) is drawn once per batch, the
  block *positions* per sample;
- the target is the union of `num_blocks` blocks, the context its complement; a sample whose
  context would be empty is redrawn;
- within a batch every sample keeps the same number of indices: each list is cut to the batch's
  minimum (lists are sorted, so the cut drops the last tokens in time/raster order).
- with `size_stream="shared"` (the release's way) the sizes of iteration i come from a fresh
  generator seeded with i, one per mask config, so every config draws the same uniforms (its
  sizes are correlated with the others') and every rank and every run draws the same sizes.
Unlike the release, positions are drawn from the run's seeded generator (the release uses the
global torch RNG of its loader workers), so a whole run's masks are reproducible from one seed and
one generator state (saved in checkpoints).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

Grid = tuple[int, int, int]


@dataclass
class MaskBatch:
    """Index tensors for one mask config over a batch.

    context: LongTensor (B, Kc), sorted token indices the context encoder sees.
    targets: list of LongTensor (B, Kt), token indices the predictor predicts; one entry for the
        V-JEPA multi-block masks (union of blocks), one per target block for I-JEPA masks.
    """

    context: torch.Tensor
    targets: list[torch.Tensor] = field(default_factory=list)

    def to(self, device) -> "MaskBatch":
        return MaskBatch(self.context.to(device, non_blocking=True),
                         [t.to(device, non_blocking=True) for t in self.targets])


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + torch.rand(1, generator=generator).item() * (high - low)


def _randint(generator: torch.Generator, low: int, high_inclusive: int) -> int:
    return int(torch.randint(low, high_inclusive + 1, (1,), generator=generator).item())


def _collate(index_lists: list[torch.Tensor], limit: int | None = None) -> torch.Tensor:
    """Stack per-sample sorted index lists, cut to the batch minimum (and to `limit`)."""
    keep = min(len(ix) for ix in index_lists)
    if limit is not None:
        keep = min(keep, int(limit))
    return torch.stack([ix[:keep] for ix in index_lists]).long()


def _check_grid(grid) -> Grid:
    grid = tuple(int(g) for g in grid)
    if len(grid) == 2:
        grid = (1, *grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"mask grid must be (t, h, w) with positive sizes, got {grid}")
    return grid


class MultiBlockMask3D:
    """V-JEPA multi-block masking: target = union of spatio-temporal blocks, context = the rest.

    grid: token grid (t, h, w); spatial_scale: range of a block's area as a fraction of h*w;
    temporal_scale: range of a block's duration as a fraction of t (1.0 = full clip);
    aspect_ratio: range of the block's h/w; num_blocks: blocks per sample;
    max_temporal_keep: fraction of time steps the context may span (later steps become target);
    max_keep: optional cap on the number of context tokens.
    """

    def __init__(self, grid, spatial_scale=(0.15, 0.15), temporal_scale=(1.0, 1.0),
                 aspect_ratio=(0.75, 1.5), num_blocks=8, max_temporal_keep=1.0, max_keep=None,
                 max_redraws: int = 100):
        self.grid = _check_grid(grid)
        self.spatial_scale = tuple(float(s) for s in spatial_scale)
        self.temporal_scale = tuple(float(s) for s in temporal_scale)
        self.aspect_ratio = tuple(float(a) for a in aspect_ratio)
        self.num_blocks = int(num_blocks)
        t = self.grid[0]
        self.max_context_steps = max(1, int(t * float(max_temporal_keep)))
        self.max_keep = max_keep
        self.max_redraws = max_redraws

    def block_size(self, generator: torch.Generator) -> tuple[int, int, int]:
        t_grid, h_grid, w_grid = self.grid
        t = max(1, int(t_grid * _uniform(generator, *self.temporal_scale)))
        area = int(h_grid * w_grid * _uniform(generator, *self.spatial_scale))
        ratio = _uniform(generator, *self.aspect_ratio)
        h = min(h_grid, max(1, int(round(math.sqrt(area * ratio)))))
        w = min(w_grid, max(1, int(round(math.sqrt(area / ratio)))))
        return t, h, w

    def _sample_keep(self, size, generator: torch.Generator) -> torch.Tensor:
        """Boolean (t, h, w) map: True = context token, False = target token."""
        t_grid, h_grid, w_grid = self.grid
        t, h, w = size
        keep = torch.ones(self.grid, dtype=torch.bool)
        for _ in range(self.num_blocks):
            top = _randint(generator, 0, h_grid - h)
            left = _randint(generator, 0, w_grid - w)
            start = _randint(generator, 0, t_grid - t)
            keep[start:start + t, top:top + h, left:left + w] = False
        if self.max_context_steps < t_grid:
            keep[self.max_context_steps:] = False
        return keep

    def __call__(self, batch_size: int, generator: torch.Generator,
                 size_generator: torch.Generator | None = None) -> MaskBatch:
        size = self.block_size(generator if size_generator is None else size_generator)
        contexts, targets = [], []
        for _ in range(batch_size):
            for _attempt in range(self.max_redraws):
                keep = self._sample_keep(size, generator).flatten()
                if keep.any():
                    break
            else:
                raise ValueError(
                    f"multi-block mask with {self.num_blocks} blocks of size {size} on grid "
                    f"{self.grid} left no context token in {self.max_redraws} draws; lower "
                    "num_blocks or spatial_scale in the mask config")
            contexts.append(torch.nonzero(keep).flatten())
            targets.append(torch.nonzero(~keep).flatten())
        return MaskBatch(_collate(contexts, self.max_keep), [_collate(targets)])


class TubeMask:
    """VideoMAE tube masking: the same random spatial positions are hidden at every time step."""

    def __init__(self, grid, ratio: float = 0.9):
        self.grid = _check_grid(grid)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"tube mask ratio must be in (0, 1), got {ratio}")
        self.ratio = float(ratio)
        t, h, w = self.grid
        self.num_keep_spatial = max(1, int(h * w * (1.0 - self.ratio)))

    def __call__(self, batch_size: int, generator: torch.Generator,
                 size_generator: torch.Generator | None = None) -> MaskBatch:
        t, h, w = self.grid  # fixed sizes: size_generator is not used
        contexts, targets = [], []
        for _ in range(batch_size):
            keep2d = torch.zeros(h * w, dtype=torch.bool)
            keep2d[torch.randperm(h * w, generator=generator)[:self.num_keep_spatial]] = True
            keep = keep2d.repeat(t)
            contexts.append(torch.nonzero(keep).flatten())
            targets.append(torch.nonzero(~keep).flatten())
        return MaskBatch(_collate(contexts), [_collate(targets)])


class RandomMask:
    """Uniform random masking over all spatio-temporal tokens (ablation)."""

    def __init__(self, grid, ratio: float = 0.9):
        self.grid = _check_grid(grid)
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"random mask ratio must be in (0, 1), got {ratio}")
        self.ratio = float(ratio)
        n = math.prod(self.grid)
        self.num_keep = max(1, int(n * (1.0 - self.ratio)))

    def __call__(self, batch_size: int, generator: torch.Generator,
                 size_generator: torch.Generator | None = None) -> MaskBatch:
        n = math.prod(self.grid)  # fixed sizes: size_generator is not used
        contexts, targets = [], []
        for _ in range(batch_size):
            perm = torch.randperm(n, generator=generator)
            contexts.append(perm[:self.num_keep].sort().values)
            targets.append(perm[self.num_keep:].sort().values)
        return MaskBatch(_collate(contexts), [_collate(targets)])


class MultiBlockMask2D:
    """I-JEPA masking on an image grid: several target blocks, one large context block minus them.

    Facts from the I-JEPA release (`src/masks/multiblock.py`, in1k configs): 4 target blocks of
    scale (0.15, 0.2) and aspect (0.75, 1.5); 1 context block of scale (0.85, 1.0), aspect 1,
    with the target blocks removed; sizes drawn once per batch, positions per sample; each
    target block is predicted separately. When a context block keeps fewer than `min_keep`
    tokens after `max_redraws` draws, the context falls back to every non-target token (never
    to target tokens, which would leak the answer).
    """

    def __init__(self, grid, pred_scale=(0.15, 0.2), enc_scale=(0.85, 1.0),
                 aspect_ratio=(0.75, 1.5), num_targets=4, min_keep=10, max_redraws: int = 20):
        self.grid = _check_grid(grid)
        if self.grid[0] != 1:
            raise ValueError(f"MultiBlockMask2D is for image grids (t=1), got {self.grid}")
        self.pred_scale = tuple(float(s) for s in pred_scale)
        self.enc_scale = tuple(float(s) for s in enc_scale)
        self.aspect_ratio = tuple(float(a) for a in aspect_ratio)
        self.num_targets = int(num_targets)
        self.min_keep = int(min_keep)
        self.max_redraws = max_redraws

    def _size(self, generator, scale, aspect) -> tuple[int, int]:
        _, h_grid, w_grid = self.grid
        area = h_grid * w_grid * _uniform(generator, *scale)
        ratio = _uniform(generator, *aspect)
        h = min(h_grid, max(1, int(round(math.sqrt(area * ratio)))))
        w = min(w_grid, max(1, int(round(math.sqrt(area / ratio)))))
        return h, w

    def _block(self, size, generator) -> torch.Tensor:
        _, h_grid, w_grid = self.grid
        h, w = size
        top = _randint(generator, 0, h_grid - h)
        left = _randint(generator, 0, w_grid - w)
        block = torch.zeros((h_grid, w_grid), dtype=torch.bool)
        block[top:top + h, left:left + w] = True
        return block

    def __call__(self, batch_size: int, generator: torch.Generator,
                 size_generator: torch.Generator | None = None) -> MaskBatch:
        sizes = generator if size_generator is None else size_generator
        pred_size = self._size(sizes, self.pred_scale, self.aspect_ratio)
        enc_size = self._size(sizes, self.enc_scale, (1.0, 1.0))
        contexts, targets = [], [[] for _ in range(self.num_targets)]
        for _ in range(batch_size):
            # On small grids the target blocks can, by chance, tile the whole image and leave no
            # context: redraw their positions (same sizes) until some context is left.
            for _attempt in range(self.max_redraws):
                blocks = [self._block(pred_size, generator) for _ in range(self.num_targets)]
                covered = torch.stack(blocks).any(dim=0)
                if int((~covered).sum()) >= min(self.min_keep, covered.numel() - 1):
                    break
            for j, block in enumerate(blocks):
                targets[j].append(torch.nonzero(block.flatten()).flatten())
            context = None
            for _attempt in range(self.max_redraws):
                candidate = self._block(enc_size, generator) & ~covered
                if int(candidate.sum()) >= self.min_keep:
                    context = candidate
                    break
            if context is None:
                context = ~covered
            if not context.any():
                raise ValueError(
                    f"I-JEPA mask: {self.num_targets} target blocks of size {pred_size} cover the "
                    f"whole grid {self.grid[1:]}; lower num_targets or pred_scale")
            contexts.append(torch.nonzero(context.flatten()).flatten())
        # All target blocks share one length (the release collates them into one tensor).
        keep = min(len(ix) for per_block in targets for ix in per_block)
        return MaskBatch(_collate(contexts),
                         [_collate(per_block, keep) for per_block in targets])


MASK_TYPES = {
    "multiblock3d": MultiBlockMask3D,
    "multiblock2d": MultiBlockMask2D,
    "tube": TubeMask,
    "random": RandomMask,
}


def build_mask_generator(spec: dict, grid):
    """One generator from a config entry such as `{type: multiblock3d, num_blocks: 8, ...}`."""
    spec = dict(spec)
    kind = spec.pop("type", "multiblock3d")
    if kind not in MASK_TYPES:
        raise ValueError(f"unknown mask type '{kind}'; known: {', '.join(MASK_TYPES)}")
    try:
        return MASK_TYPES[kind](grid, **spec)
    except TypeError as err:
        raise ValueError(f"bad options for mask type '{kind}': {spec} ({err})") from err


class MaskCollator:
    """All of a run's mask configs plus the one seeded generator that draws them.

    `collator(batch_size)` returns one `MaskBatch` per config (V-JEPA: 8 blocks @ 0.15 and
    2 blocks @ 0.7). `state_dict()` holds the generator state as a uint8 tensor, so a resumed run
    draws exactly the masks the uninterrupted run would have drawn.
    """

    def __init__(self, specs: list[dict], grid, seed: int = 0, size_stream: str = "independent"):
        if not specs:
            raise ValueError("no mask config given: the pretraining config needs a `masks` list")
        if size_stream not in ("shared", "independent"):
            raise ValueError(f"size_stream must be 'shared' or 'independent', got {size_stream!r}")
        self.grid = _check_grid(grid)
        self.generators = [build_mask_generator(s, self.grid) for s in specs]
        self.size_stream = size_stream
        self.rng = torch.Generator()
        self.rng.manual_seed(int(seed))

    def __len__(self) -> int:
        return len(self.generators)

    def __call__(self, batch_size: int, iteration: int | None = None) -> list[MaskBatch]:
        """One MaskBatch per config; `iteration` (0-based, the run's step) seeds shared sizes."""
        if self.size_stream == "independent":
            return [g(batch_size, self.rng) for g in self.generators]
        if iteration is None:
            raise ValueError("shared mask sizes need the iteration number: collator(batch, iteration)")
        return [g(batch_size, self.rng, size_generator=self.size_generator(iteration))
                for g in self.generators]

    @staticmethod
    def size_generator(iteration: int) -> torch.Generator:
        """The generator the sizes of `iteration` are drawn from (a fresh one per mask config)."""
        return torch.Generator().manual_seed(int(iteration))

    def state_dict(self) -> dict:
        return {"rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.set_state(state["rng"])


def rank_seed(seed: int, rank: int) -> int:
    """The seed of process `rank`'s mask generator: each rank draws its own masks, and a fixed
    offset keeps them apart and reproducible."""
    return int(seed) * 1_000_003 + int(rank) + 1
