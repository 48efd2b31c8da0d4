"""MVEB's protocol beside ours: the `logreg` probe against the numbers mteb itself produced on the
same features (tests/fixtures/mveb/), and HMDB51 / UCF101 from their classic split files
(miniature replicas: real AVI files, the publishers' split-file formats)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import probes
from probes import logreg
from probes.registry import probe_type

FIXTURE = Path(__file__).parent / "fixtures" / "mveb" / "mteb_scores.json"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn's ill-defined precision


def _features(seed, n_train, n_test, num_classes, dim, spread):
    """The fixture's features: the recipe of the script that ran mteb (fixtures/mveb/README.md)."""
    rs = np.random.RandomState(seed)
    means = rs.normal(0.0, spread, size=(num_classes, dim))
    y_train = rs.randint(0, num_classes, size=n_train)
    y_test = rs.randint(0, num_classes, size=n_test)
    x_train = (means[y_train] + rs.normal(size=(n_train, dim))).astype(np.float32)
    x_test = (means[y_test] + rs.normal(size=(n_test, dim))).astype(np.float32)
    return x_train, y_train, x_test, y_test


def _cases():
    return json.loads(FIXTURE.read_text())["cases"]


def _settings(case) -> logreg.MtebSettings:
    return logreg.MtebSettings(samples_per_label=case["samples_per_label"],
                               n_experiments=case["n_experiments"],
                               seed=case.get("mteb_seed", 42), n_splits=case.get("n_splits", 5))


def _assert_equal_to_mteb(got: dict, want: dict) -> None:
    for key in logreg.METRICS:
        if want[key] is None:  # mteb: NaN where no experiment has the metric (ap, not binary)
            assert math.isnan(got[key]), key
        else:
            assert got[key] == pytest.approx(want[key], abs=1e-12), key
    assert [s["accuracy"] for s in got["scores_per_experiment"]] == \
        pytest.approx(want["accuracy_per_experiment"], abs=1e-12)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_equal_to_mteb_on_the_same_features(name):
    case, want = _cases()[name]["case"], _cases()[name]["mteb"]
    x_tr, y_tr, x_te, y_te = _features(case["seed"], case["n_train"], case["n_test"],
                                       case["num_classes"], case["dim"], case["spread"])
    if case.get("cross_validation"):
        got = logreg.cross_validate(x_te, y_te, _settings(case))
    else:
        got = logreg.evaluate(x_tr, y_tr, x_te, y_te, _settings(case))
    _assert_equal_to_mteb(got, want)


def test_fixture_exercises_what_it_claims():
    """Experiments that differ (the carried shuffle), scarce labels kept whole, binary AP."""
    cases = _cases()
    assert len(set(cases["defaults_hmdb51"]["mteb"]["accuracy_per_experiment"])) > 2
    assert cases["binary"]["mteb"]["ap"] is not None
    assert cases["defaults_hmdb51"]["mteb"]["ap"] is None
    assert cases["cross_validation"]["case"]["cross_validation"] is True


def test_undersampling_carries_the_shuffled_order():
    labels = [0] * 10 + [1] * 10 + [2] * 3
    s = logreg.MtebSettings(samples_per_label=4, n_experiments=3, seed=42)
    chosen = logreg.experiment_indices(labels, s)
    order = list(range(len(labels)))
    for kept in chosen:  # each experiment: the previous order shuffled again by RandomState(42)
        np.random.RandomState(42).shuffle(order)
        assert kept == [i for n, i in enumerate(order)
                        if sum(labels[j] == labels[i] for j in order[:n]) < 4]
        counts = np.bincount([labels[i] for i in kept])
        assert counts.tolist() == [4, 4, 3]
    assert chosen[0] != chosen[1]


def test_probe_on_tokens_equals_mteb_through_an_evaluation_pass():
    case, want = _cases()["defaults_hmdb51"]["case"], _cases()["defaults_hmdb51"]["mteb"]
    x_tr, y_tr, x_te, y_te = _features(case["seed"], case["n_train"], case["n_test"],
                                       case["num_classes"], case["dim"], case["spread"])
    # two equal tokens per video: their mean is the feature, bit for bit
    tokens_tr = torch.from_numpy(x_tr)[:, None].repeat(1, 2, 1)
    tokens_te = torch.from_numpy(x_te)[:, None].repeat(1, 2, 1)
    probe = probes.build("logreg", case["dim"], case["num_classes"])
    with pytest.raises(RuntimeError, match="not fitted"):
        probe(tokens_te)
    probe.fit(tokens_tr[:, None], torch.from_numpy(y_tr))  # (n, 1 view, L, D) as cached
    probe.eval()
    outputs = [probe(chunk) for chunk in tokens_te.split(7)]  # micro-batches of a pass
    metrics = probe.pass_metrics(torch.from_numpy(y_te))
    assert metrics["top1"] == pytest.approx(100 * want["accuracy"], abs=1e-10)
    assert metrics["f1"] == pytest.approx(100 * want["f1"], abs=1e-10)
    assert metrics["recall_weighted"] == pytest.approx(100 * want["recall_weighted"], abs=1e-10)
    assert "ap" not in metrics and all(math.isfinite(v) for v in metrics.values())
    assert [s["accuracy"] for s in probe.last_pass["scores_per_experiment"]] == \
        pytest.approx(want["accuracy_per_experiment"])
    # forward: log of the experiments' mean probabilities (the soft ensemble)
    logits = torch.cat(outputs)
    assert logits.shape == (case["n_test"], case["num_classes"])
    torch.testing.assert_close(logits.exp().sum(1), torch.ones(case["n_test"]))
    ensemble = np.mean([c.predict_proba(x_te) for c in probe.classifiers], axis=0)
    np.testing.assert_allclose(logits.exp().numpy(), ensemble, rtol=1e-5, atol=1e-7)
    with pytest.raises(RuntimeError, match="no evaluation pass"):
        probe.pass_metrics(y_te)  # consumed
    probe(tokens_te)
    with pytest.raises(ValueError, match="eval_views"):
        probe.pass_metrics(np.concatenate([y_te, y_te]))


class _FrameEncoder(torch.nn.Module):
    """A fixed random linear 'encoder': one token per frame, (B, 3, T, H, W) -> (B, T, 8)."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 8)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(8, 48, generator=torch.Generator().manual_seed(0)))
        self.requires_grad_(False)

    def forward(self, video):
        b, c, t, h, w = video.shape
        return self.proj(video.permute(0, 2, 1, 3, 4).reshape(b, t, c * h * w))


def _clips(n, seed, broken=()):
    g = torch.Generator().manual_seed(seed)
    patterns = torch.randn(3, 3, 1, 4, 4, generator=torch.Generator().manual_seed(9))
    labels = torch.randint(0, 3, (n,), generator=g)
    videos = patterns[labels][:, None, None] + 4.0 * torch.randn(n, 1, 1, 3, 2, 4, 4, generator=g)
    items = [{"video": None if i in broken else videos[i], "label": int(labels[i]),
              "path": f"v{i}.avi", "error": "unreadable" if i in broken else None}
             for i in range(n)]
    return items, videos, labels


def _collate(items):
    ok = [it for it in items if it["video"] is not None]
    return {"video": torch.stack([it["video"] for it in ok]),
            "label": torch.tensor([it["label"] for it in ok]),
            "failures": [(it["path"], it["error"]) for it in items if it["video"] is None]}


def test_the_trainers_fitted_pass_gives_mtebs_numbers_from_its_predictions():
    """The trainer's metrics for the fitted probe (`probe.pass_metrics` after its evaluation
    pass) equal mteb's algorithm on the pooled features of the readable clips, failed clips and
    micro-batches included."""
    from torch.utils.data import DataLoader

    encoder = _FrameEncoder()
    train, train_videos, train_labels = _clips(40, seed=1)
    test, test_videos, test_labels = _clips(23, seed=2, broken={4})
    probe = probes.build("logreg", 8, 3, samples_per_label=3, n_experiments=4)
    result = probes.train_probe(
        encoder, probe, DataLoader(train, batch_size=6, collate_fn=_collate),
        DataLoader(test, batch_size=5, collate_fn=_collate),
        probes.OptimConfig(epochs=1, batch_size=6, lr=1e-3, weight_decay=0.0, bf16=False),
        max_failure_fraction=0.1)
    metrics = result.metrics
    keep = [i for i in range(23) if i != 4]
    pooled_train = encoder(train_videos[:, 0, 0]).mean(1)
    pooled_test = encoder(test_videos[keep, 0, 0]).mean(1)
    want = logreg.evaluate(pooled_train, train_labels, pooled_test, test_labels[keep],
                           logreg.MtebSettings(samples_per_label=3, n_experiments=4))
    assert metrics["top1"] == pytest.approx(100 * want["accuracy"], abs=1e-10)
    assert metrics["f1_weighted"] == pytest.approx(100 * want["f1_weighted"], abs=1e-10)
    assert len({s["accuracy"] for s in want["scores_per_experiment"]}) > 1


def test_registered_as_a_fitted_probe_labelled_mveb():
    assert "logreg" in probes.names()
    cfg = probes.config("logreg")
    assert cfg["benchmark"] == "mveb"
    defaults = logreg.MtebSettings()
    assert {k: cfg[k] for k in ("samples_per_label", "n_experiments", "seed", "max_iter")} == \
        {k: getattr(defaults, k) for k in ("samples_per_label", "n_experiments", "seed", "max_iter")}
    ptype = probe_type("logreg")
    assert not ptype.trained
    assert ptype.protocol(cfg)["benchmark"] == "mveb" and ptype.protocol(cfg)["kind"] == "logreg"
    kw = ptype.build_kwargs({**cfg, "grid": None}, num_heads=4)
    probe = probes.build("logreg", 8, 3, **kw)
    assert probe.trainable is False and not list(probe.parameters())
    assert isinstance(probes.from_config(cfg, embed_dim=8, num_classes=3), logreg.LogRegProbe)
    with pytest.raises(ValueError, match="benchmark"):
        probes.build("logreg", 8, 3, benchmark="mine")
    with pytest.raises(ValueError, match="n_experiments"):
        probes.build("logreg", 8, 3, n_experiments=0)
    clf = logreg.classifier(defaults)  # mteb's LogisticRegression(max_iter=100), random_state 42
    assert (clf.max_iter, clf.random_state, clf.C, clf.solver) == (100, 42, 1.0, "lbfgs")


# ---------------------------------------------------------------------------------------------
# HMDB51 and UCF101 from their classic split files


def _avi(path: Path, frames: int = 66, shade: int = 0) -> None:  # > one 16x4 clip
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 40, 32, "yuv420p"
        for i in range(frames):
            arr = np.full((32, 40, 3), (shade + 9 * i) % 255, np.uint8)
            arr[:, : 4 + i % 30] = (shade * 3) % 255
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


HMDB_USED = ("brush_hair", "cartwheel", "wave")


def make_native_hmdb51(root: Path) -> None:
    """Three classes with videos (names with HMDB's punctuation), all three splits' files; the
    other 48 classes' split files present and empty. Planted: a missing video, a malformed
    line, a duplicate line, a video found only in another class's folder, a flag-0 video."""
    from tasks.native.hmdb51 import SPLIT_FOLDER

    names = ["brush_hair", "cartwheel", "catch", "chew", "clap", "climb", "climb_stairs", "dive",
             "draw_sword", "dribble", "drink", "eat", "fall_floor", "fencing", "flic_flac", "golf",
             "handstand", "hit", "hug", "jump", "kick", "kick_ball", "kiss", "laugh", "pick",
             "pour", "pullup", "punch", "push", "pushup", "ride_bike", "ride_horse", "run",
             "shake_hands", "shoot_ball", "shoot_bow", "shoot_gun", "sit", "situp", "smile",
             "smoke", "somersault", "stand", "swing_baseball", "sword", "sword_exercise", "talk",
             "throw", "turn", "walk", "wave"]
    folder = root / SPLIT_FOLDER
    folder.mkdir(parents=True)
    for c in names:
        for k in (1, 2, 3):
            (folder / f"{c}_test_split{k}.txt").write_text("")
    for ci, c in enumerate(HMDB_USED):
        vids = [f"Clip_{c}_(take)!_{j}_f_nm_np1_fr_med_{j}.avi" for j in range(5)]
        for j, v in enumerate(vids):
            _avi(root / c / v, shade=40 * ci + 7 * j)
        for k in (1, 2, 3):
            # split k: videos rotate between the halves; the last is flagged 0 in every split
            lines = [f"{v} {1 if (j + k) % 3 else 2} " for j, v in enumerate(vids[:4])]
            lines.append(f"{vids[4]} 0 ")
            (folder / f"{c}_test_split{k}.txt").write_text("\n".join(lines) + "\n")
    with open(folder / "wave_test_split1.txt", "a") as f:
        f.write("ghost_video_missing.avi 1 \n")          # listed, not on disk
        f.write("a line without a flag\n")               # malformed
        f.write("Clip_wave_(take)!_0_f_nm_np1_fr_med_0.avi 1 \n")  # duplicate
        f.write("stray_in_cartwheel.avi 2 \n")          # only in another class's folder
    _avi(root / "cartwheel" / "stray_in_cartwheel.avi")


def test_hmdb51_prepare_writes_the_three_splits_and_reports_line_by_line(tmp_path, monkeypatch):
    from tasks.manifest import read_label_map, read_manifest
    from tasks.native import prepare

    root = tmp_path / "hmdb51"
    make_native_hmdb51(root)
    report = prepare("hmdb51", root, progress=False, workers=1)
    classes = read_label_map(root / "classes.txt")
    assert len(classes) == 51 and classes == sorted(classes) and classes[-1] == "wave"
    counts = report["problem_counts"]
    assert counts == {"malformed": 1, "duplicate": 1, "missing": 1, "mislabelled": 1}, counts
    by_kind = {p["kind"]: p for p in report["problems"]}
    assert by_kind["missing"]["where"].endswith("wave_test_split1.txt:6 ghost_video_missing.avi")
    assert "cartwheel" in by_kind["mislabelled"]["detail"]
    assert any("flagged 0" in n for n in report["notes"])
    for k in (1, 2, 3):
        train = read_manifest(root / f"train{k}.csv", 51)
        test = read_manifest(root / f"test{k}.csv", 51)
        assert not {p for p, _ in train} & {p for p, _ in test}
        assert len(train) + len(test) == 3 * 4
        for path, label in train + test:
            assert Path(path).parent.name == classes[label]  # labelled by its class folder
            assert "_4_f_" not in path  # flag 0: in neither half
    # split 1: j = 0, 1, 3 train (flag 1) and j = 2 test, per class
    test1 = read_manifest(root / "test1.csv", 51)
    assert sorted(Path(p).name for p, _ in test1) == sorted(
        f"Clip_{c}_(take)!_2_f_nm_np1_fr_med_2.avi" for c in HMDB_USED)


UCF_CLASSES = ("ApplyEyeMakeup", "HandstandPushups", "YoYo")


def make_native_ucf101(root: Path, class_index=UCF_CLASSES) -> None:
    """classInd listing `class_index`, videos of UCF_CLASSES in
    UCF-101/<Class>/v_<Class>_gXX_cYY.avi (HandstandPushups's files spelt HandStandPushups, as
    published), CRLF lists for splits 1 and 2 (no split 3 files). Planted: an index that
    contradicts its folder, a test line of an unknown class."""
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i + 1} {c}\r\n" for i, c in enumerate(class_index)))
    spelt = {"HandstandPushups": "HandStandPushups"}
    for ci, c in enumerate(UCF_CLASSES):
        for g in (1, 2, 8, 9):
            _avi(root / "UCF-101" / c / f"v_{spelt.get(c, c)}_g{g:02d}_c01.avi", shade=50 * ci + g)
    for k, test_groups in ((1, (1, 2)), (2, (8, 9))):
        train, test = [], []
        for c in UCF_CLASSES:
            for g in (1, 2, 8, 9):
                rel = f"{c}/v_{spelt.get(c, c)}_g{g:02d}_c01.avi"
                (test if g in test_groups else train).append(rel)
                if g not in test_groups:
                    train[-1] += f" {class_index.index(c) + 1}"
        if k == 1:
            train.append(f"YoYo/v_YoYo_g99_c01.avi {class_index.index('ApplyEyeMakeup') + 1}")
            test.append("Juggling/v_Juggling_g01_c01.avi")  # not a class of classInd
        (lists / f"trainlist{k:02d}.txt").write_text("\r\n".join(train) + "\r\n")
        (lists / f"testlist{k:02d}.txt").write_text("\r\n".join(test) + "\r\n")


def test_ucf101_prepare_reads_classind_and_the_lists(tmp_path, monkeypatch):
    from tasks.manifest import read_label_map, read_manifest
    from tasks.native import prepare

    root = tmp_path / "ucf101"
    make_native_ucf101(root)
    report = prepare("ucf101", root, progress=False, workers=1)
    assert read_label_map(root / "classes.txt") == list(UCF_CLASSES)
    assert report["problem_counts"] == {"unknown_label": 1, "mislabelled": 1}
    assert any("trainlist03.txt" in n for n in report["notes"])
    assert any("51-class subset not written" in n for n in report["notes"])
    assert not (root / "train3.csv").exists()
    for k, test_groups in ((1, ("g01", "g02")), (2, ("g08", "g09"))):
        train = read_manifest(root / f"train{k}.csv", 3)
        test = read_manifest(root / f"test{k}.csv", 3)
        assert len(train) == 6 and len(test) == 6
        assert all(any(g in p for g in test_groups) for p, _ in test)
        for path, label in train + test:  # the case-mismatched names found, labelled by folder
            assert Path(path).parent.name == UCF_CLASSES[label]


def test_classind_must_be_one_to_n(tmp_path):
    from tasks.errors import DataError
    from tasks.native.ucf101 import read_class_index

    p = tmp_path / "classInd.txt"
    p.write_text("1 A\n3 B\n")
    with pytest.raises(DataError, match="without gaps"):
        read_class_index(p)


def test_logreg_runs_end_to_end_on_hmdb51_and_says_it_is_mvebs_protocol(tmp_path, monkeypatch):
    from harness.cli import main
    from tasks.native import prepare

    # `harness data prepare hmdb51` once tasks/native/common.py registers the preparer
    root = tmp_path / "hmdb51"
    make_native_hmdb51(root)
    prepare("hmdb51", root, progress=False, workers=1)
    out = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "hmdb51",
                 "--probe", "logreg", "--out", str(out), "--no-progress",
                 f"task.data.root={root}", "task.sampling.frames_per_clip=8",
                 "task.sampling.frame_step=2", "task.optim.num_workers=0",
                 "task.max_failure_fraction=0.5", "probe.n_experiments=3",
                 "probe.samples_per_label=2"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    probe = record["protocol"]["probe"]
    assert probe["kind"] == "logreg" and probe["benchmark"] == "mveb"
    assert (probe["n_experiments"], probe["samples_per_label"], probe["seed"]) == (3, 2, 42)
    assert 0.0 <= record["metrics"]["top1"] <= 100.0


def test_mvebs_51_class_ucf101_subset_runs_with_its_classes_only(tmp_path, monkeypatch):
    """train1_51va / test1_51va: split 1 of MVEB's 51 audio-bearing classes (YoYo is not one);
    the task ucf101_51va probes the classes present, here 2 of classInd's 53."""
    from harness.cli import main
    from tasks.manifest import read_manifest
    from tasks.native import prepare
    from tasks.native.ucf101 import MVEB_51VA

    assert len(MVEB_51VA) == len(set(MVEB_51VA)) == 51
    class_index = sorted([*MVEB_51VA, "YoYo", "Juggling"], key=str.lower)
    root = tmp_path / "ucf101"
    make_native_ucf101(root, class_index)
    report = prepare("ucf101", root, progress=False, workers=1)
    assert report["splits"]["train1_51va"]["written"] == 4
    for half in ("train", "test"):
        full = read_manifest(root / f"{half}1.csv", 53)
        subset = read_manifest(root / f"{half}1_51va.csv", 53)
        assert subset == [(p, lab) for p, lab in full if class_index[lab] != "YoYo"]
        assert len(full) == 6 and len(subset) == 4
    out = tmp_path / "runs"
    assert main(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "ucf101_51va",
                 "--probe", "logreg", "--out", str(out), "--no-progress",
                 f"task.data.root={root}", "task.num_classes=53", "task.sampling.frames_per_clip=8",
                 "task.sampling.frame_step=2", "task.optim.num_workers=0"]) == 0
    (record,) = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert record["protocol"]["probe"]["benchmark"] == "mveb"
    assert record["protocol"]["task"]["classes"]["kept"] == 2
