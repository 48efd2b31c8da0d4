"""`harness run` on a violation-of-expectation task: the predictor's surprise on every pair of a
small synthetic set, through the CLI, into a record that passes `check_record`.

Sized for seconds: three pairs of 20 frames (`make_physics`), the tiny V-JEPA at random init,
windows every 4 frames (a recorded departure from the task's stride 2).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main

FAST = ["task.sampling.stride=4"]
# A random predictor of the registry's default size is the release's (384 wide, 12 deep): a
# small one keeps each run to seconds (and is what the run's label and identity then say).
SMALL = "+predictor={width:32,depth:1,num_heads:4}"


@pytest.fixture(scope="module")
def physics(tmp_path_factory):
    from tasks.physics_synth import make_physics

    root = tmp_path_factory.mktemp("physics")
    make_physics(root, pairs_per_property=1, num_frames=20)
    return root


def _args(root, out, *extra):
    return ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "physics_synth",
            "--out", str(out), f"task.data.root={root}", "--no-progress", *FAST, SMALL, *extra]


def _records(out: Path) -> list[Path]:
    return sorted((out / "records").glob("*.json"))


@pytest.fixture(scope="module")
def batch_one(physics, tmp_path_factory):
    """One run at batch 1 (windows one at a time): its record path."""
    out = tmp_path_factory.mktemp("runs1")
    assert main(_args(physics, out, "eval_batch_size=1")) == 0
    (path,) = _records(out)
    return path


def test_the_record_passes_check_record_and_says_what_it_measured(batch_one):
    from results import read_record
    from results.record import check_record

    record = read_record(batch_one)          # the one reader: size, depth, check_record
    check_record(json.loads(batch_one.read_text()))
    assert record["protocol"]["task"]["kind"] == "voe"
    assert record["extra"]["main_metric"] == "paper_relative_mean"
    m = record["metrics"]
    assert m["num_pairs"] == 3 and m["num_samples"] == 3  # the pair is the unit
    for name in ("paper_relative_mean", "relative_mean", "relative_max", "absolute_max",
                 "auroc_mean", "auroc_max"):
        assert m[f"{name}_lo"] <= m[name] <= m[f"{name}_hi"], name
    for prop in ("permanence", "continuity", "constancy"):
        assert m[f"relative_mean/{prop}"] in (0.0, 100.0)    # one pair each
    assert 0 <= m["auroc_max"] <= 1 and 0 <= m["relative_max"] <= 100
    # the protocol holds the sampling, the surprise settings and the manifest's digest
    p = record["protocol"]
    assert p["task"]["sampling"]["stride"] == 4 and p["surprise"]["stride"] == 4
    assert p["surprise"]["context_frames"] == [2, 4, 6] and p["surprise"]["target"] == "latent"
    assert len(p["task"]["manifests"]["test"]["sha256"]) == 64
    assert record["protocol_departures"] == {"sampling.stride": 4}
    assert record["data_problems"]["unreadable_pairs"] == 0
    assert "--probe" not in record["extra"]["command"]
    assert record["encoder"]["label"] == "vjepa_tiny + predictor (depth 1, num_heads 4, width 32)"
    assert record["extra"]["predictor"]["spec"]["width"] == 32


def test_the_headline_is_the_papers_aggregation(batch_one):
    """Per property the best relative accuracy (mean surprise) over the context lengths and
    Filtered, averaged over properties: recomputed here from the per-curve numbers."""
    from results import read_record

    record = read_record(batch_one)
    curves = record["extra"]["voe"]["curves"]
    props = ("permanence", "continuity", "constancy")
    best = [max(curves[k][p]["relative_mean"]["value"] for k in curves) for p in props]
    assert record["metrics"]["paper_relative_mean"] == pytest.approx(np.mean(best))


def test_batch_three_gives_batch_ones_numbers(physics, batch_one, tmp_path):
    from harness.voe_metrics import surprise_rows
    from results import read_record
    from results.physics import compare, pairs_from_videos
    from results.predictions import record_predictions

    out = tmp_path / "runs3"
    assert main(_args(physics, out, "eval_batch_size=3")) == 0
    (path,) = _records(out)
    a, b = read_record(batch_one), read_record(path)
    assert a["protocol_id"] == b["protocol_id"] and a["extra"]["run_id"] == b["extra"]["run_id"]
    pa, pb = record_predictions(a, batch_one), record_predictions(b, path)
    for key in pa:
        if pa[key].dtype.kind == "f":
            assert np.abs(pa[key] - pb[key]).max() < 1e-5, key
        else:
            assert (pa[key] == pb[key]).all(), key
    for name, value in a["metrics"].items():
        assert b["metrics"][name] == pytest.approx(value, abs=1e-9), name
    # the per-video surprises pair two records for a paired test
    rows_a, rows_b = surprise_rows(pa), surprise_rows(pb)
    assert len(rows_a) == 6 and {r["possible"] for r in rows_a} == {True, False}
    result = compare(pairs_from_videos(rows_a), pairs_from_videos(rows_b))
    assert result.diff == 0


def test_a_rerun_is_skipped_as_finished(physics, batch_one, capsys):
    out = batch_one.parent.parent
    before = sorted(p.name for p in (out / "records").iterdir())
    assert main(_args(physics, out, "eval_batch_size=1")) == 0
    assert "already done" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "records").iterdir()) == before


def test_an_unreadable_video_is_counted_not_a_traceback(physics, tmp_path, capsys):
    root = tmp_path / "broken"
    shutil.copytree(physics, root)
    manifest = json.loads((root / "test.json").read_text())
    # the manifest names the videos where make_physics wrote them: point it at the copy
    text = (root / "test.json").read_text().replace(str(physics), str(root))
    (root / "test.json").write_text(text)
    bad = root / "videos" / "continuity" / "0000" / "impossible" / "00003.png"
    bad.write_bytes(b"not a png")
    assert manifest["pairs"]
    # past the task's max_failure_fraction (0.05): one clear error naming the pair
    assert main(_args(root, tmp_path / "strict")) == 2
    err = capsys.readouterr().err
    assert "1 of 3 pairs could not be read" in err and "continuity/0000" in err
    assert "Traceback" not in err
    # within a looser fraction: scored without it, and the record counts it
    assert main(_args(root, tmp_path / "loose", "+task.max_failure_fraction=0.5")) == 0
    assert "could not be read and were left out" in capsys.readouterr().out
    (path,) = _records(tmp_path / "loose")
    record = json.loads(path.read_text())
    assert record["data_problems"]["unreadable_pairs"] == 1
    assert record["data_problems"]["examples"][0].startswith("continuity/0000")
    assert record["metrics"]["num_pairs"] == 2


@pytest.mark.parametrize("extra,named", [
    (["--probe", "linear"], "--probe"),
    (["--probe-checkpoint", "p.pt"], "--probe-checkpoint"),
    (["+probe.grid={lr:[0.001]}"], "+probe.grid"),
    (["micro_batch_size=4"], "micro_batch_size"),
])
def test_probe_flags_are_a_clear_error(physics, tmp_path, capsys, extra, named):
    assert main(_args(physics, tmp_path / "runs", *extra)) == 2
    err = capsys.readouterr().err
    assert "trains no probe" in err and named in err
    assert not (tmp_path / "runs" / "records").exists()


def test_launched_through_submitit_and_found_recorded_by_the_next_launch(physics, tmp_path,
                                                                        capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "runs"
    args = ["launch", "--launcher", "local", "--encoder", "vjepa_tiny", "--random-init",
            "--task", "physics_synth", "--out", str(out), f"task.data.root={physics}",
            *FAST, SMALL]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 run(s): 1 to submit" in printed
    (path,) = _records(out)
    record = json.loads(path.read_text())
    assert record["protocol"]["task"]["kind"] == "voe" and record["metrics"]["num_pairs"] == 3
    # the job's line shows the headline and its interval, not the dozens of VoE metrics
    line = next(ln for ln in printed.splitlines() if " done: " in ln)
    assert "paper_relative_mean " in line and "relative_max" not in line
    # the same launch again, and `harness run --launcher`: found recorded, nothing submitted
    assert main(args) == 0
    assert "1 run(s): 0 to submit, 1 already recorded" in capsys.readouterr().out
    assert main(["run", "--launcher", "local", *args[3:]]) == 0
    assert "0 to submit, 1 already recorded" in capsys.readouterr().out
    assert len(list((out / "submitit").glob("*_submitted.pkl"))) == 1
    # probe keys and several GPUs per job are refused before anything is submitted
    assert main([*args, "--probe", "linear"]) == 2
    assert "trains no probe" in capsys.readouterr().err
    assert main([*args, "--gpus-per-node", "2", "--dry-run"]) == 2
    assert "scores on one device" in capsys.readouterr().err
    assert len(_records(out)) == 1


def test_dry_run_says_what_it_would_do_and_writes_nothing(physics, tmp_path, capsys):
    assert main(_args(physics, tmp_path / "runs", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert "3 pairs" in out and "constancy 1, continuity 1, permanence 1" in out
    assert "context lengths [2, 4, 6]" in out and "protocol_id" in out
    assert not (tmp_path / "runs").exists()


def test_a_missing_manifest_says_how_to_make_it(tmp_path, capsys):
    assert main(_args(tmp_path / "nothing", tmp_path / "runs")) == 2
    assert "harness data make physics" in capsys.readouterr().err


def test_frames_are_cropped_and_resized_as_the_authors_loader_does():
    """Square frames are resized whole; others lose their sides (the fallback of
    random_resized_crop at scale 1, ratio 1); values are (x - 255 mean) / (255 std)."""
    from harness.voe_run import crop_box, video_tensor

    assert crop_box(64, 64) == (0, 0, 64, 64)
    assert crop_box(48, 80) == (0, 16, 48, 48)
    assert crop_box(80, 48) == (16, 0, 48, 48)
    frames = np.full((4, 48, 80, 3), 255, np.uint8)
    frames[:, :, :16] = 0                    # cropped away
    x = video_tensor(frames, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    assert x.shape == (3, 4, 32, 32)
    assert np.allclose(x.numpy(), (255 - 127.5) / 63.75)


def test_a_pixel_target_pretraining_file_scores_pixels_under_its_own_protocol(physics, batch_one,
                                                                              tmp_path, capsys):
    """A `harness pretrain` file whose predictor predicts pixels: the run scores its
    reconstruction error of the future frames, and its protocol (and identity) say pixels."""
    import torch

    import encoders
    from encoders.jepa.predictor import Predictor
    from results import read_record

    torch.manual_seed(5)
    enc = encoders.build("vjepa_tiny", random_init=True, seed=5)
    pred = Predictor((4, 4, 4), 96, width=32, depth=1, num_heads=2, num_mask_tokens=1,
                     out_dim=2 * 8 * 8 * 3)
    ckpt = tmp_path / "latest.pth.tar"
    torch.save({"encoder": {f"module.backbone.{k}": v for k, v in enc.backbone.state_dict().items()},
                "predictor": pred.state_dict(), "epoch": 1,
                "config": {"predictor": {"num_heads": 2}, "target": "pixels"}}, ckpt)
    args = ["run", "--encoder", "vjepa_tiny", "--checkpoint", str(ckpt), "--task", "physics_synth",
            "--out", str(tmp_path / "runs"), f"task.data.root={physics}", "--no-progress", *FAST]
    assert main(args) == 0
    (path,) = _records(tmp_path / "runs")
    record = read_record(path)
    assert record["protocol"]["surprise"]["target"] == "pixels"
    assert record["protocol_id"] != read_record(batch_one)["protocol_id"]
    assert record["checkpoint"]["random_init"] is False
    capsys.readouterr()
    assert main(args) == 0                       # found again once the file says pixels
    assert "already done" in capsys.readouterr().out
    assert _records(tmp_path / "runs") == [path]


def test_frames_equal_the_authors_video_transform():
    """`video_tensor` against the authors' VideoTransform as their eval.py builds it
    (tests/fixtures/voe_frames/README.md): square, wide and tall frames."""
    from harness.voe_run import video_tensor

    cases = json.loads((Path(__file__).parent / "fixtures" / "voe_frames" / "frames.json")
                       .read_text())["cases"]
    assert len(cases) == 4
    for c in cases:
        t, h, w = c["shape"]
        video = np.random.default_rng(c["seed"]).integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)
        ours = video_tensor(video, c["crop"], (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        assert list(ours.shape) == c["out_shape"]
        assert np.abs(ours.double().flatten().numpy() - np.array(c["out"])).max() < 1e-5


def test_an_unknown_predictor_setting_is_a_clear_error(physics, tmp_path, capsys):
    assert main(_args(physics, tmp_path / "runs", "+predictor={widht:32}")) == 2
    assert "unknown predictor setting(s) widht" in capsys.readouterr().err
