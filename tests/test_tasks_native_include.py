"""Task configs outside the repo: a YAML path, or folders on the search path
($HARNESS_INCLUDE_PATH / `include=`), validated with the registry's clear errors."""
from __future__ import annotations

import os

import pytest
import yaml

import tasks
from tasks.errors import DataError, UnknownNameError


def _my_task(folder, name="my_digits", **changes):
    cfg = tasks.config("digits_motion")
    cfg["name"] = name
    cfg.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_yaml_path_is_a_task(tmp_path):
    path = _my_task(tmp_path)
    cfg = tasks.config(str(path))
    assert cfg["name"] == "my_digits" and cfg["num_classes"] == 8
    task = tasks.build(str(path), root=tmp_path)
    assert task.name == "my_digits" and task.root == tmp_path


def test_include_path_from_argument_and_environment(tmp_path, monkeypatch):
    _my_task(tmp_path / "a")
    _my_task(tmp_path / "b" / "task", name="other_task")
    assert "my_digits" in tasks.names(include=str(tmp_path / "a"))
    assert "my_digits" not in tasks.names()
    monkeypatch.setenv(tasks.INCLUDE_ENV, os.pathsep.join([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert {"my_digits", "other_task", "k400"} <= set(tasks.names())
    assert tasks.config("other_task")["name"] == "other_task"


def test_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="not found"):
        tasks.config(str(tmp_path / "nope.yaml"))
    with pytest.raises(DataError, match="is not a folder"):
        tasks.names(include=str(tmp_path / "missing_dir"))
    # a user's config is validated when read: the spec's messages, not a mid-run traceback
    bad = _my_task(tmp_path / "c", name="bad_task", num_clases=3)
    with pytest.raises(DataError, match="unknown key.*num_clases"):
        tasks.config(str(bad))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "broken.yaml").write_text("name: broken\nsampling: {frames_per_clip: 4\n")
    with pytest.raises(DataError, match="not valid YAML at line"):
        tasks.config(str(tmp_path / "d" / "broken.yaml"))
    # shadowing a repo task is refused, naming both files
    _my_task(tmp_path / "e", name="k400")
    with pytest.raises(DataError, match=r"e/k400.yaml defines task 'k400', the name of a built-in "
                                        r"task \(.*tasks/configs/task/k400.yaml\)"):
        tasks.names(include=str(tmp_path / "e"))
    # unknown names still list close matches, include-path tasks among them
    _my_task(tmp_path / "f")
    with pytest.raises(UnknownNameError, match="my_digits"):
        tasks.config("my_digit", include=str(tmp_path / "f"))


def test_a_user_task_never_takes_a_built_in_name(tmp_path, monkeypatch):
    """A user's YAML named like a built-in is refused wherever it comes from (by path, on the
    include path, from the environment), never read as, or in place of, the built-in."""
    by_path = _my_task(tmp_path / "mine", name="k400")
    with pytest.raises(DataError, match="the name of a built-in task.*rename the file"):
        tasks.config(str(by_path))
    with pytest.raises(DataError, match="the name of a built-in task"):
        tasks.build(str(by_path), root=tmp_path)
    # the name inside the file counts too, not only the file name
    renamed = tmp_path / "mine" / "my_k400.yaml"
    renamed.write_text(by_path.read_text())
    with pytest.raises(DataError, match="defines task 'k400', the name of a built-in task"):
        tasks.config(str(renamed))
    # on the include path, from the argument or the environment: every lookup says so
    for lookup in (lambda: tasks.config("k400", include=str(tmp_path / "mine")),
                   lambda: tasks.config("digits_motion", include=str(tmp_path / "mine")),
                   lambda: tasks.names(include=str(tmp_path / "mine"))):
        with pytest.raises(DataError, match="the name of a built-in task"):
            lookup()
    monkeypatch.setenv(tasks.INCLUDE_ENV, str(tmp_path / "mine"))
    with pytest.raises(DataError, match="the name of a built-in task"):
        tasks.build("k400")
    monkeypatch.delenv(tasks.INCLUDE_ENV)
    # the built-in's own file, named by its path, is the built-in
    assert tasks.config(str(tasks.CONFIG_DIR / "k400.yaml")) == tasks.config("k400")
    # a user task under its own name works, and is filed under that name
    own = _my_task(tmp_path / "ok", name="k400_mine")
    assert tasks.build(str(own), root=tmp_path).name == "k400_mine"


def test_a_task_from_a_path_runs_end_to_end(tmp_path):
    from omegaconf import OmegaConf, open_dict

    from harness.config import compose_run
    from harness.runner import run_evaluation
    from tasks.digits import make_digits

    data = tmp_path / "digits"
    make_digits(data, seed=0, per_class_train=2, per_class_val=1, per_class_test=1, num_frames=20,
                size=32, progress=False)
    path = _my_task(tmp_path / "configs", optim={**tasks.config("digits_motion")["optim"],
                                                 "epochs": 1, "batch_size": 8})
    cfg = compose_run(["encoder=vjepa_tiny", "task=digits_motion", "random_init=true",
                       f"out={tmp_path / 'runs'}", "progress=false"])
    # What `--task path.yaml` composes to (harness/config.py): the file's config as the task node.
    with open_dict(cfg):
        cfg.task = OmegaConf.create({**tasks.config(str(path)), "data": {
            **tasks.config(str(path))["data"], "root": str(data)}})
    record = run_evaluation(cfg).record
    assert record["task"] == "my_digits"
