"""One output path: the probe trainer only logs and draws its bars with common.progress.Bar."""
from __future__ import annotations

import inspect
import logging

import pytest
import torch
from test_probes_trainer import C, D, PatchEncoder, ToyClips, loader

import probes
from common.progress import reset_console
from probes import OptimConfig, train_probe


class _Lines(logging.Handler):
    """Every INFO line of the `probes` loggers; attached to `probes` itself, since the CLI's
    `harness.output.install` (run by other tests in this process) stops it propagating."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


@pytest.fixture
def lines():
    handler, logger = _Lines(), logging.getLogger("probes")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _optim(**kw):
    return OptimConfig(**{"epochs": 2, "batch_size": 8, "lr": 1e-2, **kw})


def _grid():
    from probes.grid import ProbeGrid

    torch.manual_seed(0)
    return ProbeGrid(lambda: probes.build("linear", D, C),
                     [{"lr": 1e-2, "weight_decay": 0.01}, {"lr": 1e-3, "weight_decay": 0.01}])


def test_the_trainer_takes_no_log_callable():
    assert "log" not in inspect.signature(train_probe).parameters
    assert inspect.signature(train_probe).parameters["progress"].default is False


def test_epochs_cache_chosen_head_and_metrics_are_logged_not_printed(lines, capsys):
    result = train_probe(PatchEncoder(), _grid(), loader(ToyClips(16)), loader(ToyClips(8)),
                         _optim(), cache_features=True, selection="val",
                         selection_data=loader(ToyClips(8, seed=3)))
    assert capsys.readouterr() == ("", "")  # no bar asked for, nothing printed
    assert lines[0] == f"cached training features: 16 clips in " \
                       f"{result.timings['feature_cache']['seconds']:.1f} s (0.0 MB)"
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split(":")[0] for e in epochs] == ["epoch 1/2", "epoch 2/2"]
    lr = result.history[-1]["lr"]
    assert f"loss {result.history[-1]['loss']:.4f}, lr {lr:.3g}, train top1 " in epochs[-1]
    head = result.heads[result.chosen_head]
    said = (f"head {result.chosen_head} chosen on the held-out validation split: "
            f"lr {head['lr']:g}, wd 0.01, top1 {head['val_top1']:.2f}")
    assert [line for line in lines if " chosen on " in line] == [said]
    assert lines[-1] == "evaluation: " + ", ".join(f"{k} {v:.2f}"
                                                   for k, v in result.metrics.items())


def test_a_resume_is_logged(lines, tmp_path):
    def run():
        torch.manual_seed(0)
        return train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ToyClips(16)),
                           loader(ToyClips(8)), _optim(), state_path=tmp_path / "s.pt")

    first = run()
    assert not any(line.startswith("resuming") for line in lines)
    again = run()  # the state of the finished training: nothing left to train
    assert f"resuming probe training from {tmp_path / 's.pt'} after epoch 2/2" in lines
    assert again.metrics == first.metrics


def test_progress_is_drawn_on_the_shared_console(capsys):
    reset_console()  # the shared console is made on the captured stderr
    try:
        train_probe(PatchEncoder(), probes.build("linear", D, C), loader(ToyClips(16)),
                    loader(ToyClips(8)), _optim(), progress=True)
        err = capsys.readouterr().err
    finally:
        reset_console()
    assert "epoch 1/2" in err and "epoch 2/2" in err and "eval" in err and "samples/s" in err
