"""`harness run --task ek100` end to end on a miniature EPIC-KITCHENS-100 in its native layout
(the publisher's CSVs, real mp4 files), and the pieces of the run side: the anticipation task
spec and protocol, the verb/noun/action probe, the focal loss and recall@5 scorer of
`probes.anticipation`, and the head's input of encoder + predictor tokens
(`probes.predicted_future`) against the release's wrapper (tests/fixtures/ek100/README.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from probes.anticipation import Anticipation, AnticipationScorer
from probes.focal import sigmoid_focal_loss
from results.anticipation import ClassMeanRecall
from tasks.errors import DataError
from tasks.native import ek100
from tasks.spec import TaskSpec
from tests.test_ek100_coin import EPIC_HEADER, FIXTURE, _epic_row, make_video

FIXTURES = Path(__file__).parent / "fixtures/ek100"
FUTURE = json.loads((FIXTURES / "predicted_future_release.json").read_text())
PROBE = json.loads((FIXTURES / "anticipation_probe_release.json").read_text())

# 12 training actions over 7 verbs and 6 nouns (10 action classes), 6 validation actions: more
# classes than the top 5, so recall@5 is not 100 by construction.
TRAIN_ROWS = [("P01_01", i, sf, sf + 40, v, n) for i, (sf, v, n) in enumerate(
    [(70, 0, 0), (130, 1, 1), (190, 2, 2), (250, 3, 3), (310, 4, 4), (370, 5, 5)])] + \
    [("P02_01", i, sf, sf + 40, v, n) for i, (sf, v, n) in enumerate(
        [(70, 6, 0), (130, 0, 1), (190, 1, 2), (250, 2, 3), (310, 0, 0), (370, 1, 1)])]
VAL_ROWS = [("P03_01", i, sf, sf + 30, v, n) for i, (sf, v, n) in enumerate(
    [(70, 0, 0), (120, 6, 0), (170, 2, 2), (220, 3, 3), (270, 0, 1), (320, 5, 5)])]

TINY = ["--encoder", "vjepa_tiny", "--random-init", "--task", "ek100",
        "task.anticipation.predictor=false", "task.anticipation.frames_per_clip=8",
        "task.resolution=32", "task.optim.epochs=2", "task.optim.batch_size=4",
        "micro_batch_size=2", "task.optim.num_workers=0", "probe.depth=1", "--no-progress"]


@pytest.fixture(scope="module")
def ek_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ek100_native")
    (root / "annotations").mkdir()
    for name, rows in (("EPIC_100_train.csv", TRAIN_ROWS), ("EPIC_100_validation.csv", VAL_ROWS)):
        (root / "annotations" / name).write_text(
            "\n".join([EPIC_HEADER] + [_epic_row(*r) for r in rows]) + "\n")
    for vid in ("P01_01", "P02_01", "P03_01"):
        make_video(root / vid.split("_")[0] / "videos" / f"{vid}.MP4", 440)
    out = tmp_path_factory.mktemp("ek100")
    report = ek100.prepare(root, out, verify=True, progress=False, workers=1)
    assert report["num_classes"] == {"verb": 7, "noun": 6, "action": 10}
    assert report["splits"]["val"]["written"] == 6
    return out


def _args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", *TINY, f"task.data.root={root}", "--out", str(out), *extra]


def _plan(argv: list[str]):
    from harness.cli import build_parser
    from harness.commands.run import overrides_from_args
    from harness.config import compose_run
    from harness.plan import plan_run

    args, extra = build_parser().parse_known_args(argv)
    args.overrides = list(args.overrides) + extra
    return plan_run(compose_run(overrides_from_args(args)))


@pytest.fixture(scope="module")
def ek_run(ek_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(_args(ek_data, out)) == 0
    (path,) = sorted((out / "records").glob("*.json"))
    return path, json.loads(path.read_text())


# ---------------------------------------------------------------------------- end to end
def test_a_run_records_verb_noun_and_action_recall_at_5(ek_run):
    _, rec = ek_run
    m = rec["metrics"]
    assert m["num_samples"] == 6
    for o in ("verb", "noun", "action"):
        assert 0.0 <= m[f"{o}_recall5"] <= 100.0 and 0.0 <= m[f"{o}_top5"] <= 100.0
    assert m["recall5"] == m["action_recall5"]
    task = rec["protocol"]["task"]
    assert task["kind"] == "anticipation" and task["metric"] == "recall5"
    assert task["num_classes"] == {"verb": 7, "noun": 6, "action": 10}
    assert task["anticipation"]["anticipation_point"] == "action_start"
    assert task["anticipation"]["predictor"] is False
    assert set(task["label_files_sha256"]) == {"verb", "noun", "action"}
    assert rec["protocol"]["probe"]["kind"] == "attentive_v2"  # the task's default probe
    assert rec["protocol_departures"]["anticipation.predictor"] is False


def test_the_recorded_recall_is_the_predictions_recall(ek_run):
    """The record's numbers recomputed from the per-sample top 5 saved beside it, by the class
    mean of results.anticipation (TP / (TP + FN + eps) over the classes present)."""
    path, rec = ek_run
    with np.load(str(path).removesuffix(".json") + ".predictions.npz") as f:
        pred = {k: f[k] for k in f.files}
    assert len(pred["path"]) == 6
    for o, classes in (("verb", 7), ("noun", 6), ("action", 10)):
        labels, top = pred[o], pred[f"{o}_top5"]
        assert top.shape == (6, 5)
        hit = (top == labels[:, None]).any(1)
        tp = np.bincount(labels[hit], minlength=classes)
        seen = np.bincount(labels, minlength=classes)
        want = 100.0 * float((tp / (seen + 1e-8)).sum()) / int((seen > 0).sum())
        assert rec["metrics"][f"{o}_recall5"] == pytest.approx(want, abs=1e-9)


def test_the_anticipation_point_and_the_head_input_have_their_own_protocol_ids(ek_data, tmp_path):
    start = _plan(_args(ek_data, tmp_path))
    release = _plan(_args(ek_data, tmp_path, "task.anticipation.anticipation_point=release_default"))
    assert start.protocol_id != release.protocol_id
    assert start.protocol_id == _plan(_args(ek_data, tmp_path)).protocol_id
    # The head's input is protocol too (the run refuses predictor: true for now; the task's
    # protocol already tells the two apart).
    import tasks

    enc = tasks.build("ek100", root=ek_data, anticipation={"predictor": False}).protocol()
    both = tasks.build("ek100", root=ek_data).protocol()
    assert enc["anticipation"]["predictor"] is False and both["anticipation"]["predictor"] is True
    assert {k: v for k, v in enc.items() if k != "anticipation"} == \
        {k: v for k, v in both.items() if k != "anticipation"}


def test_held_out_head_selection_runs_a_grid(ek_data, tmp_path):
    """A grid chosen on the evaluation split (the release's eval_max): each output's best head
    beside the chosen head's numbers."""
    argv = _args(ek_data, tmp_path, "task.optim.epochs=1",
                 "probe.grid={lr: [0.005, 0.001], weight_decay: [0.0001]}",
                 "probe.selection=eval_max")
    assert main(argv) == 0
    (path,) = sorted((tmp_path / "records").glob("*.json"))
    rec = json.loads(path.read_text())
    assert len(rec["extra"]["grid"]) == 2 and rec["extra"]["chosen_head"] in (0, 1)
    assert "eval_max_recall5" in rec["extra"]["grid"][0]
    assert rec["metrics"]["recall5"] == max(h["eval_max_recall5"] for h in rec["extra"]["grid"])


@pytest.mark.parametrize("extra, words", [
    (["--probe", "linear"], ["verb, noun and action heads", "attentive_v2"]),
    (["+task.num_classes=3"], ["drop num_classes"]),
    (["task.anticipation.anticipation_point=start"], ["action_start", "release_default"]),
    (["+task.classes=present"], ["classes: present"]),
    # Cached tokens carry one label per clip: the verb and noun targets would be lost.
    (["cache_features=true"], ["cached features", "cache_features=false"]),
])
def test_bad_settings_are_one_clear_error(ek_data, tmp_path, capsys, extra, words):
    argv = _args(ek_data, tmp_path, *extra)
    if "--probe" in extra:  # another probe's config has no depth
        argv.remove("probe.depth=1")
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())
    for w in words:
        assert w in err, err
    assert not list(tmp_path.glob("records/*.json"))


# ---------------------------------------------------------------------------- the task spec
BASE = {"name": "ek_x", "kind": "anticipation", "data": {"train": "train.csv", "val": "val.csv",
                                                         "eval_split": "val"},
        "anticipation": {"frames_per_clip": 8}}


@pytest.mark.parametrize("change, words", [
    ({"anticipation": None}, "needs an `anticipation:` block"),
    ({"num_classes": 9}, "drop num_classes"),
    ({"sampling": {"frames_per_clip": 8, "frame_step": 2}}, "drop `sampling`"),
    ({"anticipation": {"predictor": "yes"}}, "true or false"),
    ({"anticipation": {"fps": 0}}, "fps must be"),
    ({"kind": "video", "num_classes": 3, "sampling": {"frames_per_clip": 8, "frame_step": 2}},
     "goes with kind: anticipation"),
    ({"metric": "top1"}, "reports recall5"),
])
def test_the_spec_checks_an_anticipation_task(change, words):
    with pytest.raises(DataError, match=words):
        TaskSpec.from_dict({**BASE, **change})


def test_an_anticipation_spec_derives_its_clip():
    spec = TaskSpec.from_dict(BASE)
    assert spec.num_classes is None and spec.metric == "recall5"
    assert (spec.sampling.frames_per_clip, spec.sampling.eval_segments, spec.sampling.eval_views) \
        == (8, 1, 1)
    assert spec.anticipation["anticipation_point"] == "action_start"
    assert spec.anticipation["predictor"] is False


def test_other_tasks_keep_their_protocol_ids(tmp_path):
    """Protocol ids of built-in tasks on the same synthetic manifests, computed with the code
    before the anticipation kind existed (git HEAD 86acfe0)."""
    import results
    import tasks

    before = {"k400": "c969dd8cccdd", "ssv2": "4f4dc939254a", "diving48": "169cecc1fb48",
              "jester": "86f496e55348", "hmdb51": "270eb941a218", "ucf101": "9c74174fe0b7",
              "digits_motion": "fbefaa8a9fc1", "in1k": "85c0942f2889", "coin": "b10fe6f2da5b",
              "arrow_of_time": "89e742d06c27"}
    for name, pid in before.items():
        cfg = tasks.config(name)
        n = cfg["num_classes"] if cfg.get("temporal_probe") is None else 400
        d = tmp_path / name
        d.mkdir()
        for split in ("train", "val", "test"):
            (d / f"{split}.csv").write_text("".join(f"v/{split}{i}.mp4 {i % n}\n" for i in range(6)))
        (d / "labels.txt").write_text("".join(f"c{i}\n" for i in range(n)))
        data = dict(cfg["data"], root=str(d), labels="labels.txt")
        for k in ("train", "val", "test"):
            if data.get(k):
                data[k] = f"{k}.csv"
        assert results.protocol_id(tasks.build(name, data=data).protocol()) == pid, name


# ---------------------------------------------------------------------------- loss and score
def test_the_loss_is_the_focal_sum_of_the_three_outputs():
    kind = Anticipation((3, 4, 5))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 12, generator=g) * 3
    target = torch.stack([torch.randint(0, c, (6,), generator=g) for c in (3, 4, 5)], 1)
    loss, units = kind.loss(logits, target)
    want = sum(sigmoid_focal_loss(part, target[:, i])
               for i, part in enumerate(logits.split([3, 4, 5], dim=-1)))
    assert units == 6 and torch.equal(loss, want)
    grid = torch.stack([logits, logits * 2], dim=1)  # two heads: the sum of their own losses
    heads, _ = kind.loss(grid, target)
    assert torch.allclose(heads, want + kind.loss(logits * 2, target)[0], rtol=1e-6)


def test_the_scorer_equals_results_class_mean_recall_and_the_releases_values():
    """The fixture's logits (the release's own ClassMeanRecall scored them) as each output."""
    for case in FIXTURE["class_mean_recall"]:
        c = case["num_classes"]
        kind = Anticipation((c, c, c))
        scorer = kind.scorer("cpu")
        ours = ClassMeanRecall(c, k=5)
        for logits, labels in zip(case["logits"], case["labels"]):
            x = torch.tensor(logits, dtype=torch.float32)
            y = torch.tensor(labels)
            three = torch.cat([x.roll(1, 0), x.flip(-1), x], dim=-1)
            scorer.update(kind.merge(three[:, None]), torch.stack([y.roll(1, 0), y, y], 1), {})
            ours.update(x.numpy(), labels)
        got = scorer.compute()
        assert got["action_recall5"] == pytest.approx(ours.result()["recall"], abs=1e-9)
        assert got["action_top5"] == pytest.approx(ours.result()["accuracy"], abs=1e-9)
        assert got["action_recall5"] == pytest.approx(case["cumulative"][-1]["recall"], abs=1e-4)
        assert got["recall5"] == got["action_recall5"]


def test_a_grid_reports_each_outputs_best_head_beside_the_chosen_head():
    g = torch.Generator().manual_seed(1)
    sizes = (6, 7, 8)
    target = torch.stack([torch.randint(0, c, (40,), generator=g) for c in sizes], 1)
    scores = torch.rand(40, 3, sum(sizes), generator=g)
    whole = AnticipationScorer(sizes, "cpu", head=1)
    whole.update(scores, target, {})
    got = whole.compute()
    per_head = []
    for h in range(3):
        one = AnticipationScorer(sizes, "cpu")
        one.update(scores[:, h], target, {})
        per_head.append(one.compute())
    for o in ("verb", "noun", "action"):
        assert got[f"{o}_recall5"] == per_head[1][f"{o}_recall5"]
        assert got[f"{o}_recall5_max_over_heads"] == max(p[f"{o}_recall5"] for p in per_head)
    with pytest.raises(ValueError, match="chosen head"):
        AnticipationScorer(sizes, "cpu").update(scores, target, {})


# ---------------------------------------------------------------------------- probe and input
def test_the_probe_equals_the_releases_anticipation_classifier():
    import probes

    torch.manual_seed(0)
    probe = probes.build("attentive_v2", embed_dim=64, num_classes=(7, 6, 10), depth=4).eval()
    state = probe.state_dict()
    assert list(state) == PROBE["keys"]
    for k, want in PROBE["param_sums"].items():  # the same draws in the same order
        assert float(state[k].double().sum()) == pytest.approx(want, abs=1e-9), k
    with torch.no_grad():
        logits = probe(torch.randn(2, 30, 64, generator=torch.Generator().manual_seed(1)))
    want = torch.cat([torch.tensor(PROBE["logits"][o]) for o in ("verb", "noun", "action")], -1)
    assert torch.allclose(logits, want, atol=1e-6, rtol=0)


def test_the_probe_has_the_releases_three_heads():
    import probes

    torch.manual_seed(0)
    probe = probes.build("attentive_v2", embed_dim=96, num_classes=(7, 6, 9), depth=1)
    keys = list(probe.state_dict())
    assert probe.pooler.query_tokens.shape == (1, 3, 96)
    assert keys[-6:] == ["verb_classifier.weight", "verb_classifier.bias", "noun_classifier.weight",
                         "noun_classifier.bias", "action_classifier.weight",
                         "action_classifier.bias"]
    x = torch.randn(2, 20, 96)
    logits = probe(x)
    pooled = probe.pooler(x)
    assert logits.shape == (2, 22)
    assert torch.equal(logits[:, 7:13], probe.noun_classifier(pooled[:, 1]))
    with pytest.raises(ValueError, match="several outputs"):
        probes.build("linear", embed_dim=96, num_classes=(7, 6, 9))


def test_encoder_and_predictor_tokens_equal_the_releases_wrapper():
    import encoders
    from probes.forward import encode_views
    from probes.predicted_future import PredictedFuture

    cfg = encoders.compose("vjepa2_vitl", embed_dim=64, depth=2, num_heads=4, mlp_ratio=4.0,
                           patch_size=8, tubelet_size=2, resolution=32, num_frames=8)
    enc = encoders.from_config(cfg, random_init=True, seed=0)
    pred = encoders.predictor_from_config(cfg, random_init=True, seed=1, predictor_overrides={
        "width": 64, "depth": 2, "num_heads": 4})
    video = torch.randn(3, 3, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    for case in FUTURE["cases"]:
        wrapper = PredictedFuture(enc, pred, fps=8, num_output_frames=case["num_output_frames"],
                                  num_steps=case["num_steps"])
        times = torch.tensor(case["anticipation_time"], dtype=torch.float64)
        with torch.no_grad():
            out = wrapper(video, times)
        assert list(out.shape) == case["shape"]
        assert torch.allclose(out[:, ::7, ::11], torch.tensor(case["subset"]), atol=1e-5, rtol=0)
        assert float(out.double().sum()) == pytest.approx(case["sum"], abs=1e-3)
        assert float(out.double().abs().sum()) == pytest.approx(case["abs_sum"], rel=1e-6)
        # The predicted part moves with each sample's time: the fixture's cases differ there.
        assert out.shape[1] > 64
        # Through the trainer's encoder call: each clip gets its own sample's time.
        tokens = encode_views(wrapper, video[:, None, None], anticipation_time=times, chunk=2)
        assert torch.allclose(tokens[:, 0], out, atol=1e-6)
    with pytest.raises(ValueError, match="anticipation_time"):
        encode_views(wrapper, video[:, None, None])
    table = encoders.build_predictor("vjepa_tiny", random_init=True)  # V-JEPA 1: sin-cos table
    with pytest.raises(ValueError, match="needs a RoPE predictor"):
        PredictedFuture(encoders.build("vjepa_tiny", random_init=True), table, fps=8)


V2_TINY = ["--encoder", "vjepa2_vitl", "--random-init", "--task", "ek100",
           "encoder.arch.embed_dim=64", "encoder.arch.depth=2", "encoder.arch.num_heads=4",
           "encoder.arch.patch_size=8", "encoder.arch.resolution=32", "encoder.arch.num_frames=8",
           "task.anticipation.frames_per_clip=8", "task.resolution=32", "task.optim.epochs=1",
           "task.optim.batch_size=4", "micro_batch_size=2", "task.optim.num_workers=0",
           "probe.depth=1", "--no-progress"]


def test_the_releases_head_input_runs_end_to_end(ek_data, tmp_path):
    """predictor: true (the release's protocol): a V-JEPA 2 encoder and its RoPE predictor from
    the same weights feed the head; a grid reports each output's best head as the release."""
    argv = ["run", *V2_TINY, f"task.data.root={ek_data}", "--out", str(tmp_path),
            "probe.grid={lr: [0.005, 0.001], weight_decay: [0.0001]}", "probe.selection=eval_max"]
    assert main(argv) == 0
    (path,) = sorted((tmp_path / "records").glob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["protocol"]["task"]["anticipation"]["predictor"] is True
    for output in ("verb", "noun", "action"):
        assert f"{output}_recall5_max_over_heads" in rec["metrics"]
