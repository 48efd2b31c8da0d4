"""A synthetic violation-of-expectation set rendered on CPU in seconds (`harness data make
physics`): the embedded default of the intuitive-physics evaluation, for tests and the demo.

Every pair is one scene: an object (a disc or a square of one colour) glides across a static
background and passes behind an occluder (a screen standing on the floor). The possible video
shows what must happen; the impossible one breaks one principle:

* `permanence`: the object does not come out from behind the occluder (it vanished there,
  `variant: vanish`), or an object that never went behind it comes out (`variant: appear`,
  whose possible video shows no object at all). The two variants alternate, as IntPhys pairs
  its quadruplets, so that "more happens in the impossible video" is true of half the pairs
  only: a model that is merely surprised by change cannot score above chance on them (a random
  tiny V-JEPA was, before: the vanish-only pairs put it at 12.5% on max surprise);
* `continuity`: the object teleports: at the moment it reaches the occluder it is at once on
  the far side, never having passed behind it;
* `constancy`: the object comes out in another colour (`variant: colour`) or another shape
  (`variant: shape`) than it went in with.

Both videos of a pair are rendered from the same draws (background, occluder, motion) and differ
only by the violation, so they are identical frame for frame until it; the violation frame
recorded is the first frame whose pixels differ, which the maker checks against the planned
event. Frames are written as PNG folders (lossless: the pixels read back are the pixels
rendered, in any process; an H.264 encoder is not reproducible across processes here), and the
pairs go into a VoE manifest (`tasks.voe`) like the native preparers write.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from .errors import DataError
from .voe import VoEItem, VoEPair, VoESet, first_difference, write_voe_manifest

PROPERTIES = ("permanence", "continuity", "constancy")
SPLIT = "test"
MANIFEST = f"{SPLIT}.json"
VIDEOS = "videos"
# Saturated object colours (RGB in [0, 1]); a constancy violation swaps to another of them.
PALETTE = np.array([[0.90, 0.15, 0.15], [0.15, 0.70, 0.20], [0.20, 0.35, 0.95],
                    [0.95, 0.85, 0.10], [0.85, 0.20, 0.85], [0.10, 0.85, 0.85]], np.float32)
SHAPES = ("disc", "square")
# An object's edge is drawn half a pixel past its radius (anti-aliasing) and the occluder covers
# whole pixels: "fully hidden" keeps this much more than the radius behind it (px).
HIDE_MARGIN = 1.5


def scene(rng: np.random.Generator, num_frames: int, size: int) -> dict:
    """Draw one scene (every length in pixels, for a left-to-right pass; `flip` mirrors it).

    The object reaches the occluder a quarter to a third of the way in, stays fully hidden 1-3
    frames and comes out with frames to spare, so a context window of the first frames never
    holds the violation."""
    s = size / 64.0
    r = float(rng.uniform(4.0, 5.5) * s)
    v = float(rng.uniform(1.2, 1.6) * s)
    # wide enough to hide the object fully (its anti-aliased edge included) for a few frames
    width = 2 * r + 2 * HIDE_MARGIN + float(rng.uniform(3.0, 5.0)) * v
    enter = float(rng.uniform(0.25, 0.33)) * (num_frames - 1)  # leading edge touches the occluder
    near = max(2 * r + 1 + v * enter, float(rng.uniform(0.35, 0.45)) * size)
    x0 = near - r - v * enter
    return {
        "r": r, "v": v, "x0": x0, "y": float(rng.uniform(0.35, 0.65) * size),
        "occ_near": near, "occ_width": width, "occ_top": float(rng.uniform(0.12, 0.2) * size),
        "occ_color": rng.uniform(0.15, 0.3, size=3).astype(np.float32) * np.float32([1.0, 0.8, 0.6]),
        "bg": float(rng.uniform(0.55, 0.75)), "tilt": rng.uniform(-0.08, 0.08, size=2).astype(np.float32),
        "color": int(rng.integers(len(PALETTE))), "shape": int(rng.integers(len(SHAPES))),
        "flip": bool(rng.integers(2)),
    }


def _frames_hidden(sc: dict, num_frames: int) -> list[int]:
    """Frames where the object, its anti-aliased edge included, is entirely behind the occluder."""
    xs = sc["x0"] + sc["v"] * np.arange(num_frames)
    reach = sc["r"] + HIDE_MARGIN
    inside = (xs - reach >= sc["occ_near"]) & (xs + reach <= sc["occ_near"] + sc["occ_width"])
    return [int(i) for i in np.flatnonzero(inside)]


def story(sc: dict, prop: str, impossible: bool, num_frames: int, variant: str = "") -> list[dict]:
    """Per frame: the object's centre x, whether it is drawn, its colour and shape index."""
    hidden = _frames_hidden(sc, num_frames)
    if not hidden:
        raise DataError("scene has no frame with the object fully hidden; widen the occluder")
    first_hidden = hidden[0]
    enter = int(np.ceil((sc["occ_near"] - sc["r"] - sc["x0"]) / sc["v"]))
    jump = sc["occ_width"] + 2 * sc["r"]  # from touching the near edge to clear of the far one
    frames = []
    for t in range(num_frames):
        x = sc["x0"] + sc["v"] * t
        shown, color, shape = True, sc["color"], sc["shape"]
        if prop == "permanence" and variant == "vanish" and impossible and t >= first_hidden:
            shown = False
        if prop == "permanence" and variant == "appear" and (not impossible or t < first_hidden):
            shown = False
        if impossible and prop == "continuity" and t >= enter:
            x += jump
        if impossible and prop == "constancy" and t >= first_hidden:
            if variant == "colour":
                color = (color + 1 + sc["color_step"]) % len(PALETTE)
            else:
                shape = 1 - shape
        frames.append({"x": x, "shown": shown, "color": color, "shape": shape})
    return frames


def render(sc: dict, frames: list[dict], size: int) -> np.ndarray:
    """uint8 RGB `(T, size, size, 3)`: background, object (anti-aliased edge), occluder in front.
    No pixel noise: the pair differs only by the violation either way, and flat areas keep the
    PNG frames small (noise made them incompressible, 90 MB for the default set) and fast to write."""
    f32 = np.float32
    ys, xs = np.mgrid[0:size, 0:size].astype(f32) + f32(0.5)
    bg = f32(sc["bg"]) + sc["tilt"][0] * (xs / size - 0.5) + sc["tilt"][1] * (ys / size - 0.5)
    base = np.repeat(bg[..., None], 3, axis=-1)
    occ = ((xs >= sc["occ_near"]) & (xs < sc["occ_near"] + sc["occ_width"]) & (ys >= sc["occ_top"]))
    out = np.empty((len(frames), size, size, 3), f32)
    for t, fr in enumerate(frames):
        img = base.copy()
        if fr["shown"]:
            dx, dy = np.abs(xs - f32(fr["x"])), np.abs(ys - f32(sc["y"]))
            dist = np.sqrt(dx * dx + dy * dy) if SHAPES[fr["shape"]] == "disc" else np.maximum(dx, dy)
            cover = np.clip(f32(sc["r"]) + f32(0.5) - dist, 0, 1)[..., None]
            img = img + (PALETTE[fr["color"]] - img) * cover
        img[occ] = sc["occ_color"]
        out[t] = img
    frames_u8 = np.clip(np.rint(out * f32(255)), 0, 255).astype(np.uint8)
    return frames_u8[:, :, ::-1] if sc["flip"] else frames_u8


def make_pair(prop: str, index: int, seed: int, num_frames: int, size: int):
    """(possible frames, impossible frames, violation frame, meta) of one pair."""
    rng = np.random.default_rng([seed, PROPERTIES.index(prop), index])
    sc = scene(rng, num_frames, size)
    sc["color_step"] = int(rng.integers(len(PALETTE) - 1))
    variant = {"constancy": ("colour", "shape"), "permanence": ("vanish", "appear")}.get(prop, ("", ""))[index % 2]
    good = render(sc, story(sc, prop, False, num_frames, variant), size)
    bad = render(sc, story(sc, prop, True, num_frames, variant), size)
    violation = first_difference(good, bad)
    hidden = _frames_hidden(sc, num_frames)
    enter = int(np.ceil((sc["occ_near"] - sc["r"] - sc["x0"]) / sc["v"]))
    planned = enter if prop == "continuity" else hidden[-1] + 1  # first frame it is seen again
    # A violation must be seen, after a context of frames that shows none of it.
    if violation >= num_frames or violation < 2 or (prop == "continuity" and violation != planned) \
            or (prop != "continuity" and violation <= hidden[-1]):
        raise DataError(f"{prop} pair {index}: violation at frame {violation}, planned at {planned} "
                        f"of {num_frames}; try more frames")
    meta = {"direction": "right-to-left" if sc["flip"] else "left-to-right",
            "shape": SHAPES[sc["shape"]], "event_frame": planned,
            "hidden_frames": [hidden[0], hidden[-1]], **({"variant": variant} if variant else {})}
    return good, bad, violation, meta


def _write_frames(folder: Path, frames: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.png", compress_level=1)


def make_physics(out_dir: str | os.PathLike, seed: int = 0, *, pairs_per_property: int = 40,
                 num_frames: int = 32, size: int = 64, progress: bool = False) -> dict:
    """Write the set under `out_dir`: `videos/<property>/<pair>/{possible,impossible}/00000.png
    ...` and the VoE manifest `test.json`. Re-running replaces the videos whole (they are
    written into a fresh folder that then takes the old one's place). Returns a summary: root,
    manifest, pairs per property, `pixels_sha256` (of every frame, in manifest order) and seconds.
    """
    from common.progress import Bar

    from .manifest import output_folder

    if pairs_per_property < 1 or num_frames < 16 or size < 32:
        raise DataError(f"need pairs_per_property >= 1, num_frames >= 16 and size >= 32, got "
                        f"{pairs_per_property}, {num_frames}, {size}")
    t0 = time.time()
    out = output_folder(out_dir)
    final = out / VIDEOS
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise DataError(f"{final} exists and is not a folder this command made; move it away")
    staging = out / f".{VIDEOS}.{uuid.uuid4().hex[:8]}"
    digest = hashlib.sha256()
    pairs: list[VoEPair] = []
    try:
        with Bar(progress) as bar:
            task = bar.add("physics pairs", total=pairs_per_property * len(PROPERTIES), info="")
            for prop in PROPERTIES:
                for i in range(pairs_per_property):
                    good, bad, violation, meta = make_pair(prop, i, seed, num_frames, size)
                    pid = f"{prop}/{i:04d}"
                    for kind, frames in (("possible", good), ("impossible", bad)):
                        _write_frames(staging / pid / kind, frames)
                        digest.update(frames.tobytes())
                    # the manifest names each video where it will be once the set is swapped in
                    pairs.append(VoEPair(pid, prop,
                                         VoEItem(str(final / pid / "possible"), f"{pid}/possible", True),
                                         VoEItem(str(final / pid / "impossible"), f"{pid}/impossible", False),
                                         diverge_frame=violation, violation_frame=violation, meta=meta))
                    bar.update(task, advance=1)
        old = out / f".{VIDEOS}.old.{uuid.uuid4().hex[:8]}"
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest = write_voe_manifest(VoESet("physics_synth", SPLIT, pairs), out / MANIFEST)
    return {"root": str(out.resolve()), "manifest": str(manifest), "seed": seed,
            "num_frames": num_frames, "size": size,
            "pairs": {p: pairs_per_property for p in PROPERTIES},
            "pixels_sha256": digest.hexdigest(), "seconds": round(time.time() - t0, 2)}
