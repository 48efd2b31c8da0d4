"""`harness.pretrain`: config composition, manifest data (real decoding), skipped videos, resume."""
import json
from pathlib import Path

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
    from encoders.jepa.model import build_encoder_config

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


def _two_manifests(root):
    """Two digit-video manifests of different sizes: 4 and 12 of the 16 training videos."""
    lines = (root / "digits_motion" / "train.csv").read_text().splitlines()
    (root / "mix_a.csv").write_text("".join(f"digits_motion/{x}\n" for x in lines[:4]))
    (root / "mix_b.csv").write_text("".join(f"digits_motion/{x}\n" for x in lines[4:]))
    return ["mix_a.csv", "mix_b.csv"]


def test_weighted_mix_draws_each_manifest_at_its_weight(digits_root):
    from encoders.jepa.model import build_encoder_config
    from harness.pretrain import read_pretrain_manifests, sample_weights

    names = _two_manifests(digits_root)
    cfg = compose_pretrain_config("vjepa_tiny", TINY + [f"data.root={digits_root}",
                                                        f"data.manifests=[{','.join(names)}]",
                                                        "data.manifest_weights=[3,1]"])
    parts = read_pretrain_manifests(cfg)
    weights = sample_weights(parts)
    assert weights[:4] == [0.75] * 4 and weights[4:] == [1 / 12] * 12  # w_d / n_d, as the release
    ds = build_pretrain_dataset(cfg, build_encoder_config(cfg), parts=parts)
    data = PretrainData(ds, batch_size=4, rank=0, world_size=1, seed=0, weights=weights)
    drawn = [i for e in range(100) for i in data.rank_indices(e)]
    share_a = sum(i < 4 for i in drawn) / len(drawn)
    assert len(drawn) == 1600 and 0.72 < share_a < 0.78  # 3:1 although a holds a quarter of b's videos
    assert data.rank_indices(3) == PretrainData(ds, batch_size=4, rank=0, world_size=1, seed=0,
                                                weights=weights).rank_indices(3)  # seeded
    two = [PretrainData(ds, batch_size=2, rank=r, world_size=2, seed=0, weights=weights).rank_indices(0)
           for r in (0, 1)]
    assert sorted(two[0] + two[1]) == sorted(PretrainData(ds, batch_size=4, rank=0, world_size=1, seed=0,
                                                          weights=weights).rank_indices(0))
    # unweighted: every video once per epoch, as before
    plain = PretrainData(ds, batch_size=4, rank=0, world_size=1, seed=0)
    assert sorted(plain.rank_indices(0)) == list(range(16))


def test_harness_pretrain_on_a_weighted_mix_records_it_in_config_json(digits_root, tmp_path):
    from harness.cli import main
    from tasks.manifest import manifest_sha256, read_manifest

    names = _two_manifests(digits_root)
    out = tmp_path / "mix"
    code = main(["pretrain", "--config", "vjepa_tiny", "--out", str(out), "--no-progress", *TINY,
                 f"data.root={digits_root}", f"data.manifests=[{','.join(names)}]",
                 "data.manifest_weights=[3,1]", "optim.total_steps=2"])
    assert code == 0 and torch.load(out / "latest.pth.tar", weights_only=True)["step"] == 2
    saved = json.loads((out / "config.json").read_text())
    assert saved["data"]["manifest_weights"] == [3, 1]
    mix = saved["data_mix"]
    assert [m["manifest"] for m in mix] == names and [m["videos"] for m in mix] == [4, 12]
    assert [m["share"] for m in mix] == [0.75, 0.25] and [m["weight"] for m in mix] == [3.0, 1.0]
    for m, name in zip(mix, names):
        path = digits_root / name
        assert m["sha256"] == manifest_sha256(read_manifest(path), base=path.parent)
        assert len(m["file_sha256"]) == 64
    for key in ("ipe_scale", "clip_grad_after_warmup"):
        assert key in saved["optim"]
    assert saved["mask_size_stream"] == "independent" and saved["reinit_linear_std"] is None


def test_bad_mix_weights_say_what_to_fix(digits_root):
    with pytest.raises(PretrainConfigError, match="one weight per manifest"):
        compose_pretrain_config("vjepa_tiny", [f"data.root={digits_root}", "data.manifest_weights=[1]"])
    with pytest.raises(PretrainConfigError, match="positive sum"):
        compose_pretrain_config("vjepa_tiny", [f"data.root={digits_root}", "data.manifest_weights=[0,0]"])


def test_harness_pretrain_resumes_a_run_the_release_wrote(digits_root, tmp_path):
    # tests/fixtures/release_pretrain_epoch1.pth.tar: the release's app/vjepa/train.py after
    # epoch 1 of 3 (2 steps each) on a tiny ViT (see tests/fixtures/make_release_pretrain.py).
    from harness.cli import main

    fixtures = Path(__file__).parent / "fixtures"
    overrides = ["encoder=vjepa_tiny", "encoder_overrides.embed_dim=24", "encoder_overrides.depth=1",
                 "encoder_overrides.num_heads=2", "encoder_overrides.patch_size=4",
                 "encoder_overrides.resolution=16", "encoder_overrides.num_frames=4",
                 "predictor.width=12", "predictor.depth=1", "optim.epochs=3", "optim.steps_per_epoch=2",
                 "optim.warmup_epochs=1", "optim.lr=1e-3", "optim.ema=[0.9,1.0]", "optim.clip_grad=1e-5",
                 "data.batch_size=2", "device=cpu", "seed=234", f"data.root={digits_root}",
                 "data.manifests=[digits_motion/train.csv]", "data.frame_step=2", "data.num_frames=4",
                 "data.resolution=16", "data.num_workers=0"]
    out = tmp_path / "from_release"
    assert main(["pretrain", "--config", "vjepa_vitl", "--out", str(out), "--no-progress",
                 "--resume-from", str(fixtures / "release_pretrain_epoch1.pth.tar"), *overrides]) == 0
    rows = (out / "metrics.csv").read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [3, 4, 5, 6]  # continued after the release's 2 steps
    state = torch.load(out / "latest.pth.tar", weights_only=True)
    assert state["step"] == 6 and state["epoch"] == 3
    assert main(["pretrain", "--config", "vjepa_vitl", "--out", str(tmp_path / "x"), "--no-progress",
                 "--resume-from", str(tmp_path / "missing.pth.tar"), *overrides]) == 2
