"""The probe's training state: verified on load, locked while in use, readable by the team."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import probes
from probes import OptimConfig, train_probe
from probes.digest import content_digest
from test_probes_trainer import C, D, PatchEncoder, ToyClips, loader

REPO = Path(__file__).resolve().parent.parent


def _train(state, epochs=1):
    torch.manual_seed(0)
    return train_probe(PatchEncoder(), probes.build("attentive", D, C, num_heads=2),
                       loader(ToyClips(16)), loader(ToyClips(8)),
                       OptimConfig(epochs=epochs, batch_size=8, lr=1e-2), progress=False,
                       state_path=state)


def test_digest_sees_every_byte_and_ignores_nothing():
    a = {"w": torch.arange(6.0).reshape(2, 3), "step": 3, "hist": [{"loss": 0.5}]}
    b = {"w": a["w"].clone(), "step": 3, "hist": [{"loss": 0.5}]}
    assert content_digest(a) == content_digest(b)
    b["w"][1, 2] = torch.nextafter(b["w"][1, 2], torch.tensor(100.0))  # one ulp
    assert content_digest(a) != content_digest(b)
    assert content_digest({"w": a["w"].reshape(3, 2)}) != content_digest({"w": a["w"]})
    assert content_digest({"w": a["w"].double()}) != content_digest({"w": a["w"]})
    assert content_digest({"x": torch.ones(2, dtype=torch.bfloat16)})  # dtypes numpy lacks


def test_a_state_whose_weights_were_overwritten_is_refused(tmp_path):
    state = tmp_path / "state.pt"
    _train(state)
    saved = torch.load(state, weights_only=True)
    assert saved["version"] == 3 and len(saved["checksum"]) == 40
    # Overwrite probe weights in place, keeping the file loadable (what a bad disk or a
    # partial copy does): torch.load itself does not notice.
    name = next(k for k, v in saved["probe"].items() if v.numel() >= 16)
    saved["probe"][name].view(-1)[:16] = 0.123
    torch.save(saved, state)
    with pytest.raises(ValueError, match=r"corrupt.*checksum.*Delete the file"):
        _train(state)  # the same run: it would load the state and re-evaluate


def test_state_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        state = tmp_path / "state.pt"
        _train(state)
        assert state.stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_a_second_process_cannot_take_a_held_state(tmp_path):
    state = tmp_path / "state.pt"
    code = ("import sys, probes, pathlib\n"
            "try:\n"
            "    with probes.state_lock(pathlib.Path(sys.argv[1])):\n"
            "        print('acquired')\n"
            "except probes.StateInUseError as err:\n"
            "    print('refused:', err)\n")
    with probes.state_lock(state):
        out = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True,
                             text=True, cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
        assert out.startswith("refused:") and f"pid {os.getpid()}" in out and "wait for it" in out
    # released (and a killed holder releases too: the kernel drops flock locks)
    out = subprocess.run([sys.executable, "-c", code, str(state)], capture_output=True, text=True,
                         cwd=REPO, check=True, env={**os.environ, "PYTHONPATH": str(REPO)}).stdout
    assert out.strip() == "acquired"
