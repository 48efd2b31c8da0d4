"""`harness.pretrain`: config composition, manifest data (real decoding), skipped videos, resume."""
import json

import pytest
import torch

from encoders.jepa import PretrainConfigError
from harness.pretrain import PretrainData, build_pretrain_dataset, compose_pretrain_config, run_pretrain

TINY = ["encoder_overrides.depth=1", "predictor.width=32", "predictor.depth=1", "predictor.num_heads=4",
        "data.batch_size=4", "device=cpu", "checkpoint_every=1000"]


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    from tasks.digits import make_digits

    root = tmp_path_factory.mktemp("digits")
    make_digits(root, seed=0, per_class_train=2, per_class_val=1, per_class_test=1,
                tasks=("digits_motion",), progress=False)
    # a manifest with one unreadable video among the real ones
    bad = root / "broken.mp4"
    bad.write_bytes(b"not a video")
    lines = (root / "digits_motion" / "train.csv").read_text().splitlines()
    # 7 good + 1 bad = 2 batches of 4 per epoch: every video, the bad one included, is drawn
    with_bad = [f"digits_motion/{line}" for line in lines[:7]] + [f"{bad} 0"]
    (root / "with_bad.csv").write_text("\n".join(with_bad) + "\n")
    return root


def test_compose_overrides_and_errors():
    cfg = compose_pretrain_config("vjepa_tiny", ["optim.total_steps=7", "data.batch_size=3", "+seed=5"])
    assert cfg["optim"]["total_steps"] == 7 and cfg["data"]["batch_size"] == 3 and cfg["seed"] == 5
    assert cfg["masks"][1]["spatial_scale"] == [0.7, 0.7]
    with pytest.raises(PretrainConfigError, match="total_step"):
        compose_pretrain_config("vjepa_tiny", ["optim.total_step=7"])
    with pytest.raises(PretrainConfigError, match="Did you mean: vjepa_tiny"):
        compose_pretrain_config("vjepa_tin")


def test_data_order_and_augmentation_depend_only_on_seed_epoch_index(digits_root):
    cfg = compose_pretrain_config("vjepa_tiny", TINY + [f"data.root={digits_root}",
                                                        "data.manifests=[digits_motion/train.csv]"])
    from encoders.jepa.trainer import build_encoder_config

    ds = build_pretrain_dataset(cfg, build_encoder_config(cfg))
    assert len(ds) == 16
    data = PretrainData(ds, batch_size=4, rank=0, world_size=1, seed=0)
    assert data.steps_per_epoch == 4
    full = list(data(0, 0))
    assert all(b.shape == (4, 3, 8, 32, 32) for b in full)
    resumed = next(iter(data(0, 2)))
    assert torch.equal(resumed, full[2])  # restart mid-epoch: the same clips, same augmentation
    assert not torch.equal(next(iter(data(1, 0))), full[0])  # a new epoch reshuffles
    # rank shards are disjoint and cover the epoch
    shards = [PretrainData(ds, batch_size=4, rank=r, world_size=2, seed=0).rank_indices(0) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 8


def test_run_pretrain_skips_unreadable_videos_and_resumes(digits_root, tmp_path):
    out = tmp_path / "run"
    overrides = TINY + [f"data.root={digits_root}", "data.manifests=[with_bad.csv]",
                        "optim.total_steps=3"]
    path = run_pretrain("vjepa_tiny", overrides, out_dir=out, progress=False)
    assert path == out / "latest.pth.tar"
    state = torch.load(path, weights_only=True)
    assert state["step"] == 3 and state["config"]["data"]["manifests"] == ["with_bad.csv"]
    problems = json.loads((out / "data_problems.json").read_text())
    assert problems["seen"] == 12
    assert 1 <= problems["unreadable"] <= 2  # once in epoch 0, maybe again in epoch 1's first batch
    assert all(e["path"].endswith("broken.mp4") for e in problems["examples"])
    assert len(problems["examples"]) == problems["unreadable"]
    # a longer schedule in the same folder continues from step 3
    run_pretrain("vjepa_tiny", overrides[:-1] + ["optim.total_steps=5"], out_dir=out, progress=False)
    rows = (out / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [1, 2, 3, 4, 5]
    assert torch.load(path, weights_only=True)["step"] == 5


def test_too_many_unreadable_videos_stop_the_run(tmp_path):
    from tasks.errors import DataError

    for i in range(4):
        (tmp_path / f"bad{i}.mp4").write_bytes(b"junk")
    (tmp_path / "m.csv").write_text("".join(f"bad{i}.mp4 0\n" for i in range(4)) * 6)
    with pytest.raises(DataError, match="unreadable"):
        run_pretrain("vjepa_tiny", TINY + [f"data.root={tmp_path}", "data.manifests=[m.csv]",
                                           "optim.total_steps=20"],
                     out_dir=tmp_path / "out", progress=False)


def test_missing_manifest_says_how_to_make_digits(tmp_path):
    from tasks.errors import DataError

    with pytest.raises(DataError, match="harness data make digits"):
        run_pretrain("vjepa_tiny", TINY + [f"data.root={tmp_path}"], out_dir=tmp_path / "o", progress=False)
