"""Faults of the machine, not of the input nor of harness: one line naming the file and the
resource, exit 1 (never 70, "a bug in harness"), files on disk whole, and a re-run that resumes."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import environment_fault, main

REPO = Path(__file__).resolve().parent.parent


def _args(root, out, *extra):
    return ["run", "--encoder", "vjepa_tiny", "--random-init", "--task", "digits_motion",
            "--out", str(out), f"task.data.root={root}", "task.optim.epochs=1",
            "task.optim.batch_size=8", "--no-progress", *extra]


def _harness(args, *, fsize: int | None = None):
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True,
                          text=True, cwd=REPO, preexec_fn=limit, timeout=600)


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_file_size_limit_at_the_state_save_is_named_and_the_rerun_finishes(digits_small,
                                                                             tmp_path):
    out = tmp_path / "runs"
    # 64 KiB: the manifests and logs fit, the probe's training state does not
    done = _harness(_args(digits_small, out), fsize=64 * 1024)
    assert done.returncode == 1, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: the file is larger than this process may write (ulimit -f)")
    assert "state" in line and ".pt" in line and "ulimit -f unlimited" in line
    assert "bug in harness" not in done.stderr
    left = _files(out)
    assert not any(name.rsplit("/", 1)[-1].startswith(".") for name in left)  # no torn .part
    assert not list((out / "records").glob("*.json"))
    again = _harness(_args(digits_small, out))
    assert again.returncode == 0, again.stderr
    assert len(list((out / "records").glob("*.json"))) == 1


@contextlib.contextmanager
def _tmpfs(where: Path, size: str):
    where.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_a_full_disk_at_the_state_save_is_named_and_nothing_torn_is_left(digits_small, tmp_path):
    with _tmpfs(tmp_path / "small", "96k") as small:
        out = small / "runs"
        done = _harness(_args(digits_small, out))
        assert done.returncode == 1, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("error: no space left on the device writing ") and str(out) in line
        assert "free space or point --out elsewhere" in line and "bug in harness" not in line
        assert not any(p.name.startswith(".") for p in out.rglob("*"))  # no partial files
    again = _harness(_args(digits_small, tmp_path / "roomy"))
    assert again.returncode == 0, again.stderr


def test_a_record_folder_on_a_full_disk_keeps_earlier_records_whole(digits_small, tmp_path):
    out = tmp_path / "runs"
    assert main(_args(digits_small, out, "-q")) == 0
    records = _files(out / "records")
    with _tmpfs(tmp_path / "full", "4k") as full:
        from common.atomic import atomic_write_bytes

        with pytest.raises(OSError) as err:
            atomic_write_bytes(full / "r.json", b"x" * 65536)
        assert err.value.errno == errno.ENOSPC and err.value.filename == str(full / "r.json")
        assert not [p for p in full.iterdir() if p.name.startswith(".")]
    assert _files(out / "records") == records


@pytest.mark.parametrize("raised, expect", [
    (OSError(errno.ENOSPC, "No space left on device", "/x/state.pt"),
     "no space left on the device writing /x/state.pt"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/r.json"),
     "the file system is read-only writing /ro/r.json"),
    (PermissionError(errno.EACCES, "Permission denied", "/p/out.csv"),
     "permission denied writing /p/out.csv"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/n/" + "a" * 300),
     "the file name is too long for the file system"),
    (OSError(errno.EFBIG, "File too large", "/f/export.csv"), "ulimit -f"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/r.json"), "the disk quota is exhausted"),
    (RuntimeError("[../third_party/gloo/transport/tcp/pair.cc:534] Connection reset by peer"),
     "a peer process of this distributed run stopped"),
    (ConnectionResetError(104, "Connection reset by peer"), "resumes from the last saved state"),
])
def test_each_environment_fault_is_one_line_naming_the_resource(raised, expect):
    text = environment_fault(raised)
    assert text is not None and expect in text and "\n" not in text


def test_a_fault_behind_a_writer_s_own_error_is_found_through_its_cause():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/a.pt")
        except OSError as inner:
            raise RuntimeError("[enforce fail at inline_container.cc:778] unexpected pos") from inner
    except RuntimeError as outer:
        assert "no space left" in environment_fault(outer)
    assert environment_fault(ValueError("a user's error")) is None
    assert environment_fault(KeyError("a bug")) is None


def test_torch_save_on_a_full_file_reports_the_file_system_error(tmp_path):
    import torch

    from common.atomic import atomic_write

    path = tmp_path / "state.pt"

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    code = ("import torch, sys; from common.atomic import atomic_write; "
            f"atomic_write({str(path)!r}, lambda f: torch.save({{'w': torch.zeros(100000)}}, f))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          preexec_fn=limited, timeout=300)
    assert done.returncode != 0
    assert "OSError" in done.stderr and "File too large" in done.stderr and str(path) in done.stderr
    assert not path.exists() and not list(tmp_path.glob(".*"))
    atomic_write(path, lambda f: torch.save({"w": torch.zeros(3)}, f))  # no limit: fine
    assert torch.load(path, weights_only=True)["w"].shape == (3,)
    assert json.dumps(os.listdir(tmp_path)) == json.dumps(["state.pt"])


def test_a_full_disk_under_the_feature_store_is_named_and_the_rerun_finishes(digits_small,
                                                                            tmp_path):
    with _tmpfs(tmp_path / "small", "64k") as small:
        out = tmp_path / "runs"
        done = _harness(_args(digits_small, out, f"feature_store={small / 'features'}"))
        assert done.returncode == 1, done.stderr
        line = done.stderr.strip().splitlines()[-1]
        assert line.startswith("error: no space left on the device") and "bug in harness" not in line
        assert str(small / "features") in line
        assert not list((out / "records").glob("*.json"))
    again = _harness(_args(digits_small, out, f"feature_store={tmp_path / 'features'}"))
    assert again.returncode == 0, again.stderr
