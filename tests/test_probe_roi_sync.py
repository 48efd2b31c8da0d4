"""The RoI probe reads no box value back from a device: boxes are checked on the CPU (where a
read stalls nothing) before they move, with the same errors."""
import importlib.util
from pathlib import Path

import pytest
import torch

from probes.roi import RoIProbe, check_boxes

GRID = (2, 4, 6)
N = 2 * 4 * 6


def _host_reads():
    path = Path(__file__).with_name("test_probes_sync.py")
    spec = importlib.util.spec_from_file_location("probes_sync_counter", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.HostReads


HostReads = _host_reads()


def _probe():
    torch.manual_seed(0)
    return RoIProbe(4, 3, token_grid=GRID, out_layers=(-1,))


def test_boxes_on_a_device_are_not_read_in_a_training_step():
    # meta tensors have no values: any read would raise, and the counter sees none either
    probe = _probe().to("meta")
    tokens = torch.randn(2, N, 4, device="meta")
    boxes = torch.tensor([[0, 0.1, 0.1, 0.5, 0.5], [1, 0.2, 0.3, 0.9, 1.0]], device="meta")
    with HostReads() as reads:
        probe(tokens, boxes).sum().backward()
    assert reads.count == 0
    assert probe.linear.weight.grad.shape == (3, 4)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):  # the shape is still checked there
        probe(tokens, boxes[:, 1:])


def test_the_cpu_check_reads_once_and_keeps_its_errors():
    good = torch.tensor([[0, 0.1, 0.1, 0.5, 0.5], [1, 0.0, 0.2, 1.0, 0.9]])
    with HostReads() as reads:
        check_boxes(good, 2)
    assert reads.count == 1  # one transfer for all three checks
    check_boxes(torch.zeros(0, 5), 2)
    with pytest.raises(ValueError, match=r"normalised to \[0, 1\]"):
        check_boxes(torch.tensor([[0, 10.0, 20.0, 100.0, 200.0]]), 2)
    with pytest.raises(ValueError, match=r"batch indices .* \[0, 1\].*\[2.0\]"):
        check_boxes(torch.tensor([[2, 0.1, 0.1, 0.5, 0.5]]), 2)
    with pytest.raises(ValueError, match="x1 <= x2"):
        check_boxes(torch.tensor([[0, 0.5, 0.1, 0.1, 0.5]]), 2)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        check_boxes(torch.tensor([[0.1, 0.1, 0.5, 0.5]]), 2)
    # boxes on the CPU are still checked by the probe itself
    with pytest.raises(ValueError, match=r"batch indices"):
        _probe()(torch.randn(2, N, 4), torch.tensor([[2, 0.1, 0.1, 0.5, 0.5]]))
