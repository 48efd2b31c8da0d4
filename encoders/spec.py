"""`EncoderSpec`: what a built encoder is (architecture, input size, normalisation), torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

MODALITIES = ("video", "image")


@dataclass(frozen=True)
class EncoderSpec:
    name: str
    family: str
    modality: str  # 'video' (3D tubelets over the clip) or 'image' (run frame by frame)
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    tubelet_size: int
    num_frames: int
    resolution: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    mlp_ratio: float = 4.0
    uniform_power: bool = False
    description: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # other arch keys, kept for the record

    def __post_init__(self):
        if self.modality not in MODALITIES:
            raise ValueError(f"encoder {self.name!r}: modality must be one of {MODALITIES}, got {self.modality!r}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (t, h, w) at the constructed input size; t is 1 for an image encoder."""
        return self.grid_for(self.num_frames, self.resolution, self.resolution)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    def grid_for(self, num_frames: int, height: int, width: int | None = None) -> tuple[int, int, int]:
        """Token grid for an input of `num_frames` x `height` x `width`.

        An image encoder sees each frame on its own, so its grid is (frames, h, w): the forward
        concatenates every frame's h*w tokens.
        """
        width = height if width is None else width
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"encoder {self.name!r}: input {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        if self.modality == "image":
            return (num_frames, height // self.patch_size, width // self.patch_size)
        if num_frames % self.tubelet_size:
            raise ValueError(
                f"encoder {self.name!r}: {num_frames} frames is not a multiple of the tubelet size {self.tubelet_size}"
            )
        return (num_frames // self.tubelet_size, height // self.patch_size, width // self.patch_size)

    def num_tokens_for(self, num_frames: int, height: int, width: int | None = None) -> int:
        t, h, w = self.grid_for(num_frames, height, width)
        return t * h * w

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["extra"] = dict(self.extra)
        d["grid"] = list(self.grid)
        d["num_tokens"] = self.num_tokens
        return d

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "EncoderSpec":
        """Spec of a composed encoder config (the registry validates the config first)."""
        arch = dict(cfg["arch"])
        known = {"embed_dim", "depth", "num_heads", "patch_size", "tubelet_size", "num_frames",
                 "resolution", "mlp_ratio", "uniform_power"}
        return cls(
            name=str(cfg["name"]),
            family=str(cfg.get("family", "")),
            modality=str(cfg["modality"]),
            embed_dim=int(arch["embed_dim"]),
            depth=int(arch["depth"]),
            num_heads=int(arch["num_heads"]),
            patch_size=int(arch["patch_size"]),
            tubelet_size=int(arch.get("tubelet_size", 1)),
            num_frames=int(arch.get("num_frames", 1)),
            resolution=int(arch["resolution"]),
            mean=tuple(float(v) for v in cfg["mean"]),
            std=tuple(float(v) for v in cfg["std"]),
            mlp_ratio=float(arch.get("mlp_ratio", 4.0)),
            uniform_power=bool(arch.get("uniform_power", False)),
            description=str(cfg.get("description", "")),
            extra={k: v for k, v in arch.items() if k not in known},
        )
