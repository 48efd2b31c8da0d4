"""Hostile inputs: what a few bytes of YAML, a symlink, a long name or a signal must not do.

Families: bounded parsing (YAML alias bombs, deep nesting, huge scalars and numbers, unsafe tags,
duplicate keys, in task / pretraining / encoder configs and publisher JSON), directory walks
that meet link loops, writes that meet links planted in the output folder, task names that
are paths or too long for a file name, and SIGTERM / SIGINT to the long data commands and to
`harness watch`. Each case checks the exit status, the message, and the files on disk before
and after.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.cli import main

REPO = Path(__file__).resolve().parent.parent
BUILTIN_TASKS = REPO / "tasks" / "configs" / "task"


@contextlib.contextmanager
def within(seconds: float):
    """Fail (rather than hang the suite) if the block runs past `seconds`."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_cli(argv, capsys, seconds: float = 120) -> tuple[int, str]:
    with within(seconds):
        rc = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return rc, " ".join((cap.out + cap.err).split())


def snapshot(folder: Path) -> dict[str, bytes | str]:
    """Every entry under `folder` (links as `-> target`, not followed) and its bytes."""
    out = {}
    for dirpath, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(dirpath) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = p.read_bytes()
    return out


def bomb(levels: int = 8, width: int = 9) -> str:
    """The billion laughs in YAML: `width ** levels` scalars from a few hundred bytes."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def digits_task_text(name: str) -> str:
    text = (BUILTIN_TASKS / "digits_motion.yaml").read_text()
    assert "name: digits_motion" in text
    return text.replace("name: digits_motion", f"name: {name}")


# ----- bounded YAML ---------------------------------------------------------------------------

def test_an_alias_bomb_task_is_refused_at_once_naming_the_file(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\n" + bomb())
    assert path.stat().st_size < 3000
    t0 = time.perf_counter()
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--task", path, "--show-config"], capsys)
    assert rc == 2
    assert time.perf_counter() - t0 < 20
    assert str(path) in text and "more than 200,000 YAML nodes" in text and "alias" in text
    assert "bug" not in text


def test_a_bomb_under_a_key_the_task_allows_is_refused_before_validation(tmp_path):
    import tasks

    path = tmp_path / "sneaky.yaml"
    # the bomb sits inside `description`, a key TaskSpec accepts
    path.write_text(digits_task_text("sneaky") + "description:\n  " + bomb(levels=7).replace("\n", "\n  "))
    with within(20), pytest.raises(tasks.DataError, match="YAML nodes once its aliases are expanded"):
        tasks.config(str(path))


def test_compose_run_refuses_the_bomb_before_hydra_or_omegaconf_copies_it(tmp_path):
    from harness.config import ConfigError, compose_run

    path = tmp_path / "bomb2.yaml"
    path.write_text(digits_task_text("bomb2") + "extra:\n  " + bomb().replace("\n", "\n  "))
    with within(30), pytest.raises(ConfigError, match="alias"):
        compose_run(["encoder=vjepa_tiny", f"task={path}"])


def test_a_bomb_on_the_include_path_is_refused_by_name(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "inc"
    folder.mkdir()
    (folder / "far_task.yaml").write_text("name: far_task\n" + bomb())
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--include-path", folder,
                        "--task", "far_task", "--show-config"], capsys)
    assert rc == 2 and "far_task.yaml" in text and "alias" in text


@pytest.mark.parametrize("doc, message", [
    ("a: &a [1, *a]\n", "refers to the node it stands in"),                  # recursive alias
    ("m: &m {k: *m}\n", "refers to the node it stands in"),
    ("[" * 5000 + "]" * 5000 + "\n", "nested more than 64 levels deep"),     # deep nesting
    ("x: " + "{a: " * 100 + "1" + "}" * 100 + "\n", "nested more than 64 levels deep"),
    ("num_classes: " + "9" * 10_000 + "\n", "a value cannot be read"),       # 10,000 digits
    ("a: 1\nb: 2\na: 3\n", "the key 'a' is given twice (line 1 and line 3)"),
    ("x: !!python/object/apply:os.system ['touch PWNED']\n", "not valid YAML"),
    ("x: [1, 2\n", "not valid YAML at line 2"),
])
def test_hostile_yaml_documents_are_refused_with_a_clear_message(tmp_path, capsys, monkeypatch,
                                                                 doc, message):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.yaml"
    path.write_text(doc)
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--task", path, "--show-config"], capsys)
    assert rc == 2, text
    assert message in text and str(path) in text
    assert not (tmp_path / "PWNED").exists()


def test_a_huge_file_is_refused_by_its_size_before_it_is_parsed(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    with open(path, "w") as f:
        f.write("name: huge\ndescription: ")
        f.write("x" * (9 << 20))
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--task", path, "--show-config"], capsys)
    assert rc == 2 and "bytes, more than the 8,388,608" in text


def test_a_device_or_a_pipe_named_as_a_config_is_never_read(tmp_path):
    from common.bounded import BoundedInputError, load_json, load_yaml

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with within(10):
        for source in (Path("/dev/zero"), fifo):
            with pytest.raises(BoundedInputError, match="not a regular file"):
                load_yaml(source)
            with pytest.raises(BoundedInputError, match="not a regular file"):
                load_json(source)


def test_the_budget_counts_aliases_as_expanded_but_lets_real_configs_through(tmp_path):
    from common.bounded import BoundedInputError, load_yaml

    # 10,000 inline class names (iNat21-sized) and the merge key are fine
    doc = "classes: [" + ", ".join(f"c{i}" for i in range(10_000)) + "]\nm: &m {a: 1}\nn: {<<: *m, b: 2}\n"
    data = load_yaml(doc)
    assert len(data["classes"]) == 10_000 and data["n"] == {"a": 1, "b": 2}
    # 3 aliases of a 40-node list: 4 x 41 + 2 nodes, over a budget of 150
    small = "a: &a [" + ", ".join(["x"] * 40) + "]\nb: [*a, *a, *a]\n"
    assert load_yaml(small, max_nodes=400)["b"][2][39] == "x"
    with pytest.raises(BoundedInputError, match="more than 150 YAML nodes"):
        load_yaml(small, max_nodes=150)
    for path in sorted(BUILTIN_TASKS.glob("*.yaml")):
        assert isinstance(load_yaml(path), dict)


def test_a_pretraining_config_bomb_is_refused_before_hydra_reads_it(tmp_path, capsys):
    from encoders.jepa import PretrainConfigError
    from encoders.jepa import load_config as load
    from harness.pretrain_config import compose_pretrain_config

    path = tmp_path / "recipe.yaml"
    path.write_text("name: recipe\nencoder: vjepa_tiny\nextra:\n  " + bomb().replace("\n", "\n  "))
    with within(20):
        with pytest.raises(PretrainConfigError, match="YAML nodes once its aliases"):
            load(path)
        with pytest.raises(PretrainConfigError, match="YAML nodes once its aliases"):
            compose_pretrain_config(str(path))
        rc, text = run_cli(["pretrain", "--config", path, "--show-config"], capsys)
    assert rc == 2 and str(path) in text and "alias" in text


def test_a_pretraining_recipe_by_path_still_reads_as_omegaconf_does(tmp_path):
    from encoders.jepa import load_config as load

    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nencoder: vjepa_tiny\noptim: {lr: 1e-4, final_lr: 1.0e-6}\n")
    cfg = load(path)
    assert cfg["optim"]["lr"] == pytest.approx(1e-4)  # OmegaConf's float, not yaml 1.1's string


def test_an_encoder_config_goes_through_the_bounded_loader(tmp_path, monkeypatch):
    import encoders.registry as registry
    from common.bounded import BoundedInputError

    (tmp_path / "evil.yaml").write_text("name: evil\n" + bomb())
    monkeypatch.setattr(registry, "CONFIG_DIR", tmp_path)
    with within(20), pytest.raises(BoundedInputError, match="encoder config .*evil.yaml"):
        registry.config("evil")


def test_publisher_json_nested_past_the_limit_is_a_data_error_not_a_crash(tmp_path, capsys):
    root = tmp_path / "ssv2"
    root.mkdir()
    (root / "labels.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "train.json").write_text("[]")
    rc, text = run_cli(["data", "prepare", "ssv2", "--root", root, "--no-verify", "--no-progress"],
                       capsys)
    assert rc == 2, text
    assert "labels.json" in text and "nested more than 256 levels" in text
    assert not (root / "train.csv").exists()


def test_a_hostile_previous_report_is_only_an_ignored_cache(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_tree(root)
    (root / "prepare_report.json").write_text('{"files": ' + "[" * 50_000 + "]" * 50_000 + "}")
    rc, text = run_cli(["data", "prepare", "k400", "--root", root, "--no-progress", "--workers", "1"],
                       capsys)
    assert rc == 0, text
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["task"] == "k400" and len(report["files"]) == 2


@pytest.mark.parametrize("content, message", [
    (b"label,youtube_id,time_start,time_end,split\nabseiling," + b"x" * 200_000 + b",0,10,train\n",
     "not a readable CSV (field larger than field limit"),
    (b"\xff\xfelabel,youtube_id\n", "not UTF-8 text (byte 0xff"),
])
def test_a_hostile_annotation_csv_is_the_users_error_naming_the_file(tmp_path, capsys, content,
                                                                     message):
    root = tmp_path / "k400"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "train.csv").write_bytes(content)
    rc, text = run_cli(["data", "prepare", "k400", "--root", root, "--no-verify", "--no-progress"],
                       capsys)
    assert rc == 2, text
    assert "annotations/train.csv" in text and message in text and "bug" not in text
    assert not (root / "train.csv").exists()


@pytest.mark.parametrize("data, message", [
    ({"images": [], "annotations": [], "categories": [{"name": "no id"}]}, "categories must be objects"),
    ({"images": 1, "annotations": 2, "categories": 3}, "categories must be objects"),
    ({"images": [{"id": "x"}], "annotations": [], "categories": [{"id": 0, "name": "a"}]},
     "images must be objects with an integer id"),
])
def test_a_malformed_coco_json_is_the_users_error(tmp_path, capsys, data, message):
    import tasks.native.inat21 as inat21

    root = tmp_path / "inat"
    root.mkdir()
    (root / "train.json").write_text(json.dumps(data))
    with pytest.raises(Exception) as err:
        inat21.read(root, num_classes=1)
    assert type(err.value).__name__ == "DataError" and message in str(err.value)


# ----- link loops in directory walks ----------------------------------------------------------

def _k400_tree(root: Path, ids=("aaaaaaaaaa1", "aaaaaaaaaa2")) -> None:
    """A K400 publisher layout with placeholder clips (prepare --no-verify never opens them)."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    with open(root / "annotations" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        for ytid in ids:
            w.writerow(["abseiling", ytid, 0, 10, "train"])
            clip = root / "train" / "abseiling" / f"{ytid}_000000_000010.mp4"
            clip.parent.mkdir(parents=True, exist_ok=True)
            clip.write_bytes(b"placeholder")


def test_k400_prepare_on_a_tree_with_link_loops_ends_and_names_each_loop(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_tree(root)
    os.symlink("..", root / "train" / "abseiling" / "up")        # back to its grandparent
    os.symlink(str(root), root / "train" / "top")                # absolute, to the root
    os.symlink("self", root / "train" / "self")                  # a link to itself
    os.symlink("nowhere", root / "train" / "dangling")
    rc, text = run_cli(["data", "prepare", "k400", "--root", root, "--no-verify", "--no-progress"],
                       capsys, seconds=60)
    assert rc == 0, text
    lines = (root / "train.csv").read_text().splitlines()
    assert sorted(lines) == [f"train/abseiling/{y}_000000_000010.mp4 0" for y in ("aaaaaaaaaa1", "aaaaaaaaaa2")]
    notes = " ".join(json.loads((root / "prepare_report.json").read_text())["notes"])
    assert f"{root / 'train' / 'abseiling' / 'up'}: a link to its own ancestor" in notes
    assert f"{root / 'train' / 'top'}: a link to its own ancestor" in notes
    assert "a link to its own ancestor" in text  # printed too


def test_a_second_link_to_a_walked_folder_is_not_walked_again(tmp_path):
    from tasks.native.common import index_files

    root = tmp_path / "data"
    (root / "real").mkdir(parents=True)
    (root / "real" / "x.mp4").write_bytes(b"x")
    os.symlink("real", root / "alias")
    notes: list[str] = []
    with within(20):
        found = index_files(root, (".mp4",), notes)
    assert found["x"] == [str(root / "alias" / "x.mp4")] or found["x"] == [str(root / "real" / "x.mp4")]
    assert len(notes) == 1 and "already walked; not walked again" in notes[0]


def test_ssv2_prepare_with_a_link_loop_among_the_videos_ends(tmp_path, capsys):
    root = tmp_path / "ssv2"
    videos = root / "20bn-something-something-v2"
    videos.mkdir(parents=True)
    (videos / "1001.webm").write_bytes(b"placeholder")
    os.symlink(str(root), videos / "loop")
    (root / "train.json").write_text(json.dumps([{"id": "1001", "label": "pushing a pen",
                                                  "template": "Pushing [something] from left to right",
                                                  "placeholders": ["a pen"]}]))
    rc, text = run_cli(["data", "prepare", "ssv2", "--root", root, "--no-verify", "--no-progress"],
                       capsys, seconds=60)
    assert rc == 0, text
    assert (root / "train.csv").read_text().startswith("20bn-something-something-v2/1001.webm ")
    assert "loop: a link to its own ancestor" in text


def test_diving48_prepare_with_a_link_loop_among_the_clips_ends(tmp_path, capsys):
    root = tmp_path / "diving48"
    (root / "rgb" / "more").mkdir(parents=True)
    (root / "rgb" / "clip_a.mp4").write_bytes(b"placeholder")
    os.symlink("../..", root / "rgb" / "more" / "back")
    (root / "Diving48_vocab.json").write_text(json.dumps([[f"t{i}", "s", "w", "f"] for i in range(48)]))
    (root / "Diving48_V2_train.json").write_text(json.dumps([{"vid_name": "clip_a", "label": 3}]))
    rc, text = run_cli(["data", "prepare", "diving48", "--root", root, "--no-verify", "--no-progress"],
                       capsys, seconds=60)
    assert rc == 0, text
    assert (root / "train.csv").read_text() == "rgb/clip_a.mp4 3\n"
    assert "back: a link to its own ancestor" in text


def test_a_link_loop_passed_as_a_video_file_is_reported_unreadable(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_tree(root, ids=("aaaaaaaaaa1",))
    clip = root / "train" / "abseiling" / "aaaaaaaaaa1_000000_000010.mp4"
    clip.unlink()
    os.symlink(clip.name, clip)  # the clip is a link to itself
    rc, text = run_cli(["data", "prepare", "k400", "--root", root, "--no-progress", "--workers", "1"],
                       capsys, seconds=60)
    assert rc == 0, text
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["problem_counts"] == {"unreadable": 1}
    assert (root / "train.csv").read_text() == ""


# ----- writes never go through links ----------------------------------------------------------

def _make_digits(out: Path, capsys, *extra) -> tuple[int, str]:
    return run_cli(["data", "make", "digits", "--out", out, "--per-class", "1", "0", "0",
                    "--no-progress", *extra], capsys, seconds=300)


def test_make_digits_replaces_links_in_its_output_never_writing_through_them(tmp_path, capsys):
    out = tmp_path / "digits"
    victims = {name: tmp_path / f"victim_{name}" for name in ("classes", "manifest", "video", "part")}
    for v in victims.values():
        v.write_text("precious\n")
    task = out / "digits_motion"
    (task / "train" / "move left").mkdir(parents=True)
    os.symlink(victims["classes"], task / "classes.txt")
    os.symlink(victims["manifest"], task / "train.csv")
    os.symlink(victims["video"], task / "train" / "move left" / "000000.mp4")
    os.symlink(victims["part"], task / "train" / "move left" / "000000.mp4.part")  # the old temp name
    rc, text = _make_digits(out, capsys)
    assert rc == 0, text
    for v in victims.values():
        assert v.read_text() == "precious\n"
    for p in (task / "classes.txt", task / "train.csv", task / "train" / "move left" / "000000.mp4"):
        assert p.is_file() and not p.is_symlink()
    assert (task / "classes.txt").read_text().splitlines()[0] == "move left"
    assert (task / "train" / "move left" / "000000.mp4").read_bytes()[4:8] == b"ftyp"
    leftovers = [p for p in task.rglob("*.part") if not p.is_symlink()]
    assert leftovers == []


def test_make_digits_refuses_a_task_folder_that_links_outside_the_named_folder(tmp_path, capsys):
    out, elsewhere = tmp_path / "digits", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    os.symlink(elsewhere, out / "digits_motion")
    rc, text = _make_digits(out, capsys)
    assert rc == 2
    assert f"{out / 'digits_motion'} is a link to {elsewhere}, outside {out}" in text
    assert snapshot(elsewhere) == {"keep.txt": b"mine\n"}
    assert not (out / "digits_appearance").exists()  # refused before anything was written


def test_make_digits_refuses_a_class_folder_linking_outside(tmp_path, capsys):
    out, elsewhere = tmp_path / "digits", tmp_path / "elsewhere"
    (out / "digits_motion" / "train").mkdir(parents=True)
    elsewhere.mkdir()
    os.symlink(elsewhere, out / "digits_motion" / "train" / "grow")
    rc, text = _make_digits(out, capsys)
    assert rc == 2 and "train/grow is a link to" in text
    assert snapshot(elsewhere) == {}


def test_an_output_folder_the_user_names_may_itself_be_a_link(tmp_path, capsys):
    real = tmp_path / "big_disk"
    real.mkdir()
    os.symlink(real, tmp_path / "data")
    rc, text = _make_digits(tmp_path / "data", capsys)
    assert rc == 0, text
    assert (real / "digits_motion" / "train.csv").is_file()


def test_make_digits_into_a_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    rc, text = _make_digits(tmp_path / "a_file", capsys)
    assert rc == 2 and "a file of that name is in the way" in text
    assert (tmp_path / "a_file").read_text() == "x"


def test_prepare_replaces_links_at_its_outputs_and_leaves_their_targets_alone(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_tree(root)
    victims = {}
    for name in ("train.csv", "classes.txt", "prepare_report.json"):
        victims[name] = tmp_path / f"victim_{name}"
        victims[name].write_text("precious 0\n")
        os.symlink(victims[name], root / name)
    rc, text = run_cli(["data", "prepare", "k400", "--root", root, "--no-verify", "--no-progress"],
                       capsys)
    assert rc == 0, text
    for name, victim in victims.items():
        assert victim.read_text() == "precious 0\n"
        assert (root / name).is_file() and not (root / name).is_symlink()
    assert len((root / "train.csv").read_text().splitlines()) == 2


def test_split_refuses_a_default_splits_folder_linking_outside_the_root(tmp_path, capsys):
    root = tmp_path / "k400"
    _k400_tree(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "splits")
    rc, text = run_cli(["data", "split", "k400", "--root", root, "--fraction", "0.5", "--seeds", "0"],
                       capsys)
    assert rc == 2 and "is a link to" in text and "name" in text
    assert snapshot(elsewhere) == {}
    # named with --out, the same place is the user's choice
    rc, text = run_cli(["data", "split", "k400", "--root", root, "--out", root / "splits",
                        "--fraction", "0.5", "--seeds", "0"], capsys)
    assert rc == 0, text
    assert (elsewhere / "splits.json").is_file()


def test_check_reads_manifests_outside_the_root_but_writes_nothing_beside_them(tmp_path, capsys,
                                                                              digits_small):
    source = digits_small / "digits_motion"
    before = snapshot(source)
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    for split in ("train", "val", "test"):
        lines = [f"{os.path.relpath(source / line.rsplit(' ', 1)[0], outside)} {line.rsplit(' ', 1)[1]}"
                 for line in (source / f"{split}.csv").read_text().splitlines()]
        (outside / f"{split}.csv").write_text("\n".join(lines) + "\n")
    outside_before = snapshot(outside)
    task = tmp_path / "outside_task.yaml"
    task.write_text(digits_task_text("outside_task")
                    .replace("root: data/digits", f"root: {root}")
                    .replace("train: digits_motion/train.csv", "train: ../outside/train.csv")
                    .replace("val: digits_motion/val.csv", "val: ../outside/val.csv")
                    .replace("test: digits_motion/test.csv", "test: ../outside/test.csv")
                    .replace("labels: digits_motion/classes.txt", f"labels: {source / 'classes.txt'}"))
    rc, text = run_cli(["data", "check", task, "--no-progress", "--workers", "1"], capsys)
    assert rc == 0, text
    assert (root / "check_report.json").is_file()
    assert snapshot(outside) == outside_before and snapshot(source) == before


# ----- task names -----------------------------------------------------------------------------

@pytest.mark.parametrize("name, message", [
    ("x" * 240, "a task name has at most 100 characters, this one 240"),
    ("a/b", "holds a path separator"),
    ("..", "a task name is a name, not a path: got '..'"),
    ('"tab\\there"', "a task name is letters, digits"),
    ("12", "a task name is text, got int"),
    ("-rf", "a task name is letters, digits"),
])
def test_odd_task_names_in_a_config_are_refused_clearly(tmp_path, capsys, name, message):
    path = tmp_path / "odd.yaml"
    path.write_text(digits_task_text(name))
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--task", path, "--show-config"], capsys)
    assert rc == 2, text
    assert message in text and "bug" not in text


def test_a_240_character_file_name_is_refused_as_a_task_name(tmp_path, capsys):
    name = "y" * 240
    path = tmp_path / f"{name}.yaml"
    path.write_text(digits_task_text(name))
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", path,
                        f"task.data.root={tmp_path}", "--dry-run"], capsys)
    assert rc == 2 and "at most 100 characters" in text and "bug" not in text


def test_a_long_name_given_as_an_override_is_refused_before_any_file_is_named(tmp_path, capsys,
                                                                              monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
                        f"task.data.root={tmp_path}", "task.name=" + "z" * 240, "--dry-run"], capsys)
    assert rc == 2 and "at most 100 characters" in text
    assert list(tmp_path.iterdir()) == []


def test_non_text_keys_in_a_task_config_are_refused(tmp_path, capsys):
    path = tmp_path / "keys.yaml"
    path.write_text(digits_task_text("keys") + "null: 3\n")
    rc, text = run_cli(["run", "--encoder", "vjepa_tiny", "--task", path, "--show-config"], capsys)
    assert rc == 2 and "keys of a task config are names, got None" in text


# ----- signals --------------------------------------------------------------------------------

def _harness(args, env_extra=None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "harness", *map(str, args)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until `proc` has stopped itself (SIGSTOP from a failpoint) or ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state == "T":
                return
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the process never reached the failpoint")


def _signal_at_failpoint(args, failpoint: str, sig: int, timeout: float = 30):
    """Run `harness ARGS` until it stops itself at `failpoint`, then send `sig` (and SIGCONT):
    the signal arrives at that exact spot. Returns (exit code, stderr, seconds to exit)."""
    proc = _harness(args, {"HARNESS_FAILPOINT": f"{failpoint}@STOP"})
    _wait_stopped(proc)
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, sig)
    t0 = time.monotonic()
    os.kill(proc.pid, signal.SIGCONT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, " ".join((out + err).split()), time.monotonic() - t0


def _many_clips(root: Path, n: int) -> None:
    _k400_tree(root, ids=[f"id{k:09d}" for k in range(n)])


@pytest.mark.parametrize("sig, code, workers", [(signal.SIGTERM, 143, 1), (signal.SIGINT, 130, 2)])
def test_a_signal_stops_prepare_while_it_opens_files_and_keeps_what_it_opened(tmp_path, sig, code,
                                                                              workers):
    root = tmp_path / "k400"
    _many_clips(root, 40)
    # The helper's timeout bounds the wait; that it stopped early shows in what it opened.
    rc, text, _ = _signal_at_failpoint(
        ["data", "prepare", "k400", "--root", root, "--no-progress", "--workers", workers],
        "prepare.open:3", sig)
    assert rc == code, text
    assert f"stopped by {signal.Signals(sig).name}" in text and "no manifest was written" in text
    assert not (root / "train.csv").exists() and not (root / "prepare_report.json").exists()
    progress = json.loads((root / "prepare_progress.json").read_text())
    assert progress["stopped_by"] == signal.Signals(sig).name and 0 < progress["opened"] < 40
    assert [p for p in root.rglob(".*.part")] == []
    # the re-run opens only the rest, then forgets the progress file
    rc = subprocess.run([sys.executable, "-m", "harness", "data", "prepare", "k400", "--root", root,
                         "--no-progress", "--workers", "1"], cwd=REPO, capture_output=True).returncode
    assert rc == 0
    report = json.loads((root / "prepare_report.json").read_text())
    assert len(report["files"]) == 40 and not (root / "prepare_progress.json").exists()


def test_a_sigterm_while_manifests_are_written_waits_for_the_whole_set(tmp_path):
    root = tmp_path / "k400"
    _k400_tree(root)
    (root / "annotations" / "val.csv").write_text((root / "annotations" / "train.csv").read_text()
                                                   .replace(",train\n", ",val\n"))
    rc, text, _ = _signal_at_failpoint(["data", "prepare", "k400", "--root", root, "--no-progress",
                                        "--no-verify"], "prepare.write:1", signal.SIGTERM)
    assert rc == 143, text
    assert "finished the set of files it was writing" in text
    report = json.loads((root / "prepare_report.json").read_text())
    assert report["splits"]["train"]["written"] == 2 and report["splits"]["val"]["written"] == 2
    assert (root / "classes.txt").read_text().count("\n") == 400
    assert len((root / "val.csv").read_text().splitlines()) == 2


def test_a_sigterm_stops_make_digits_leaving_whole_files(tmp_path):
    out = tmp_path / "digits"
    rc, text, _ = _signal_at_failpoint(["data", "make", "digits", "--out", out,
                                        "--per-class", "2", "1", "1", "--no-progress"],
                                       "digits.video:5", signal.SIGTERM)
    assert rc == 143 and "stopped by SIGTERM" in text
    task = out / "digits_motion"
    assert (task / "classes.txt").read_text().splitlines()[0] == "move left"
    assert not (task / "train.csv").exists()  # the unfinished split has no manifest
    videos = sorted(task.rglob("*.mp4"))
    assert len(videos) == 5 and all(v.read_bytes()[4:8] == b"ftyp" for v in videos)
    assert [p for p in out.rglob("*.part")] == []


def test_a_sigterm_stops_an_idle_watch_at_once(tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    proc = _harness(["watch", folder, "--encoder", "vjepa_tiny", "--task", "digits_motion",
                     "--interval", "600"])
    line = proc.stdout.readline()  # "watching ... every 600 s"
    assert "watching" in line, proc.communicate()
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143, err
    assert time.monotonic() - t0 < 10
    assert "stopped by SIGTERM" in err


def test_watch_stops_after_a_run_that_got_sigterm_past_its_last_save(tmp_path, capsys, monkeypatch):
    """The run's own handler takes the signal (as `harness run` does), finishes its record and
    returns 0: the watcher must stop with 143 rather than poll on."""
    import harness.commands.run as run_cmd

    folder = tmp_path / "ckpts"
    folder.mkdir()
    (folder / "e1.pth.tar").write_bytes(b"x")
    (folder / "e2.pth.tar").write_bytes(b"y")
    evaluated = []

    def fake_run_one(args):
        got = {}
        previous = signal.signal(signal.SIGTERM, lambda s, f: got.setdefault("stop", s))
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives after the last state save
            time.sleep(0.05)
            evaluated.append(args.checkpoint)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0

    monkeypatch.setattr(run_cmd, "_run_one", fake_run_one)
    before = signal.getsignal(signal.SIGTERM)
    rc, text = run_cli(["watch", folder, "--encoder", "vjepa_tiny", "--task", "digits_motion",
                        "--once", "--interval", "0.1"], capsys, seconds=30)
    assert rc == 143 and "stopped by SIGTERM" in text
    assert len(evaluated) == 1  # the second checkpoint was not started
    assert signal.getsignal(signal.SIGTERM) == before  # the watcher's handler is gone again
