"""The shared bottom package: one atomic writer, one digest recipe, one "did you mean"."""
import os

import pytest

from common.atomic import atomic_write_text
from common.digest import canonical_json, json_digest
from common.names import UnknownNameError, unknown


def test_every_registry_raises_the_one_unknown_name_error():
    import encoders
    import probes
    import tasks

    for build in (lambda: encoders.config("vjepa_vitl16"), lambda: tasks.config("k401"),
                  lambda: probes.build("atentive", 8, 3)):
        with pytest.raises(UnknownNameError) as err:
            build()
        assert "Did you mean: " in str(err.value) and err.value.close


def test_unknown_lists_close_names_first_and_all_names():
    err = unknown("task", "k401", ["ssv2", "k400", "in1k"])
    assert str(err) == "unknown task 'k401'. Did you mean: k400? Known tasks: in1k, k400, ssv2."
    assert isinstance(err, KeyError) and err.close == ("k400",)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == \
        canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})
    assert json_digest({"a": 1}, 12) != json_digest({"a": 2}, 12)
    assert len(json_digest({"a": 1}, 12)) == 12


def test_atomic_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "target.txt"
    target.write_text("keep")
    link = tmp_path / "out.txt"
    os.symlink(target, link)
    atomic_write_text(link, "new")
    assert target.read_text() == "keep"
    assert not link.is_symlink() and link.read_text() == "new"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
