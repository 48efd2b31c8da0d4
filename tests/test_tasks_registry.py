"""Task registry: names/config without torch, build with overrides, spec validation, layering."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import tasks
from tasks import DataError, UnknownNameError
from tasks.spec import SamplingSpec, TaskSpec

REPO = Path(__file__).resolve().parents[1]


def test_names_lists_the_yaml_registry():
    assert {"digits_motion", "digits_appearance", "k400", "ssv2"} <= set(tasks.names())


def test_names_and_config_do_not_import_torch():
    code = ("import sys, tasks; tasks.names(); tasks.config('k400'); "
            "assert 'torch' not in sys.modules, 'torch imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "ok" in out.stdout


def test_tasks_never_import_encoders_or_harness():
    # statically: no import statement in tasks/ names them
    for py in (REPO / "tasks").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            for m in mods:
                assert m.split(".")[0] not in {"encoders", "harness", "probes", "results"}, f"{py}: imports {m}"
    # dynamically: importing every tasks module loads none of them
    code = ("import sys, tasks, tasks.dataset, tasks.digits, tasks.clip_reader, tasks.transforms, tasks.eval_transform; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('encoders', 'harness')]; "
            "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_unknown_name_lists_close_matches_and_all_names():
    with pytest.raises(UnknownNameError) as e:
        tasks.config("digit_motion")
    assert isinstance(e.value, KeyError)
    msg = str(e.value)
    assert "Did you mean: digits_motion" in msg
    for n in tasks.names():
        assert n in msg


def test_paper_protocol_configs():
    k = TaskSpec.from_dict(tasks.config("k400"))
    assert (k.num_classes, k.sampling.frames_per_clip, k.sampling.frame_step) == (400, 16, 4)
    assert (k.sampling.eval_segments, k.sampling.eval_views) == (8, 3)
    assert k.optim["epochs"] == 20 and k.optim["batch_size"] == 256
    assert k.optim["lr"] == pytest.approx(1e-3) and k.optim["weight_decay"] == pytest.approx(0.01)
    assert k.train_aug["randaugment"] == "rand-m7-n4-mstd0.5-inc1"
    assert k.train_aug["randaugment_interpolation"] == "bicubic"
    assert k.train_aug["erasing_per_frame"] is False  # the release's RandomErasing(cube=True)
    assert (k.sampling.train_placement, k.sampling.eval_placement) == ("random", "random")
    assert k.optim["micro_batch_size"] == 4 and k.optim["clip_grad_norm"] == 1.0
    assert k.train_aug["random_resized_crop"]["scale"] == [0.08, 1.0]
    assert k.train_aug["random_resized_crop"]["ratio"] == pytest.approx([0.75, 4 / 3])
    assert k.train_aug["random_erasing"] == 0.25 and k.train_aug["horizontal_flip"] is False
    assert k.eval_split == "val"
    s = TaskSpec.from_dict(tasks.config("ssv2"))
    assert (s.num_classes, s.sampling.eval_segments, s.sampling.eval_views) == (174, 2, 3)
    for name in ("digits_motion", "digits_appearance"):
        d = TaskSpec.from_dict(tasks.config(name))
        assert d.train_aug["horizontal_flip"] is False
        assert d.splits == ["train", "val", "test"] and d.eval_split == "test"


def test_build_deep_merges_overrides(tmp_path):
    t = tasks.build("digits_motion", root=tmp_path, sampling={"eval_views": 3}, resolution=48,
                    **{"optim.epochs": 2})
    assert t.spec.sampling == SamplingSpec(8, 2, 1, 2, 3, "random", "center")  # other keys kept
    assert t.spec.resolution == 48
    assert t.spec.optim["epochs"] == 2 and t.spec.optim["batch_size"] == 32
    assert t.root == tmp_path
    assert t.paths["train"] == tmp_path / "digits_motion" / "train.csv"
    # the registry copy is untouched
    assert tasks.config("digits_motion")["sampling"]["eval_views"] == 1


def test_unknown_keys_are_errors_naming_them():
    cfg = tasks.config("digits_motion")
    with pytest.raises(DataError, match="unknown key.*frame_stride"):
        tasks.from_config({**cfg, "frame_stride": 2})
    with pytest.raises(DataError, match="unknown key.*views"):
        tasks.from_config({**cfg, "sampling": {**cfg["sampling"], "views": 2}})
    with pytest.raises(DataError, match="unknown key.*trian"):
        tasks.from_config({**cfg, "data": {**cfg["data"], "trian": "x.csv"}})
    with pytest.raises(DataError, match="missing required key.*frame_step"):
        tasks.from_config({**cfg, "sampling": {"frames_per_clip": 8}})
    with pytest.raises(DataError, match="eval_split"):
        tasks.from_config({**cfg, "data": {**cfg["data"], "eval_split": "holdout"}})
    with pytest.raises(DataError, match="kind 'segmentation' is not supported"):
        tasks.from_config({**cfg, "kind": "segmentation"})
    with pytest.raises(DataError, match="a detection task reports mAP, not 'top1'"):
        tasks.from_config({**cfg, "kind": "detection"})
    with pytest.raises(DataError, match="a detection block goes with kind: detection"):
        tasks.from_config({**cfg, "kind": "detection", "metric": "mAP"})
    with pytest.raises(DataError, match="a detection block goes with kind: detection"):
        tasks.from_config({**cfg, "detection": {"videos": "v.csv"}})
    with pytest.raises(DataError, match="cached_train_copies must be an integer >= 0"):
        tasks.from_config({**cfg, "cached_train_copies": -1})
    assert tasks.from_config(cfg).spec.cached_train_copies == 4


def test_missing_manifest_says_how_to_make_digits(tmp_path):
    t = tasks.build("digits_motion", root=tmp_path / "nowhere")
    with pytest.raises(DataError) as e:
        t.dataset("train", resolution=32)
    msg = str(e.value)
    assert "train manifest" in msg and str(tmp_path / "nowhere" / "digits_motion" / "train.csv") in msg
    assert "harness data make digits --out data/digits" in msg
    k = tasks.build("k400", root=tmp_path)
    with pytest.raises(DataError, match="data.root"):
        k.dataset("val", resolution=32)
