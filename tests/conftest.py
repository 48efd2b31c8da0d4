"""Data several test modules share, made once per session (read-only for the tests)."""
from __future__ import annotations

from pathlib import Path

import pytest


def _digits(factory, name: str, train: int, val: int, test: int) -> Path:
    from tasks.digits import make_digits

    root = factory.mktemp(name)
    make_digits(root, seed=0, per_class_train=train, per_class_val=val, per_class_test=test,
                num_frames=20, size=32, progress=False)
    return root


@pytest.fixture(scope="session")
def digits_root(tmp_path_factory) -> Path:
    """The digits tasks at 4 / 1 / 2 videos per class (train / val / test), 32 px, 20 frames."""
    return _digits(tmp_path_factory, "digits", 4, 1, 2)


@pytest.fixture(scope="session")
def digits_small(tmp_path_factory) -> Path:
    """The digits tasks at 2 / 1 / 1 videos per class."""
    return _digits(tmp_path_factory, "digits_small", 2, 1, 1)
