"""The CLI's top-level guard: one line for every error, the traceback on disk or with --debug."""
import pytest

from harness import cli
from harness.commands import listing


def _boom(args):
    raise KeyError("an internal slip")


def test_an_internal_error_is_one_line_and_a_traceback_file(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(listing, "main", _boom)
    monkeypatch.setenv("HARNESS_LOG_DIR", str(tmp_path))
    assert cli.main(["encoders"]) == 70
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("internal error: KeyError")
    [log] = list(tmp_path.iterdir())
    assert str(log) in err and "--debug" in err
    text = log.read_text()
    assert "Traceback" in text and "_boom" in text and text.startswith("harness ")


@pytest.mark.parametrize("argv", [["--debug", "encoders"], ["encoders", "--debug"]])
def test_debug_anywhere_shows_the_traceback(monkeypatch, argv):
    monkeypatch.setattr(listing, "main", _boom)
    with pytest.raises(KeyError, match="internal slip"):
        cli.main(argv)


def test_a_user_error_stays_one_clear_line(monkeypatch, capsys):
    def bad(args):
        raise ValueError("seed must be an integer, got 1.5 [see --help]")

    monkeypatch.setattr(listing, "main", bad)
    assert cli.main(["encoders"]) == 2
    assert capsys.readouterr().err.strip() == "error: seed must be an integer, got 1.5 [see --help]"
