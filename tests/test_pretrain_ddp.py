"""Two-process DDP pretraining on CPU (gloo): ranks stay in sync; rank 0 writes one checkpoint."""
import os
import socket

import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    import torch.distributed as dist

    from encoders.jepa import load_config
    from encoders.jepa.trainer import JepaTrainer

    cfg = load_config("vjepa_tiny")
    cfg["encoder_overrides"] = {"depth": 1}
    cfg["predictor"] = {"width": 32, "depth": 1, "num_heads": 4}
    cfg["data"]["batch_size"] = 2
    cfg["optim"].update({"total_steps": 2, "warmup_steps": 1})
    cfg["device"] = "cpu"

    def make(epoch, start):  # each rank its own shard: different clips per rank
        for b in range(start, 2):
            g = torch.Generator().manual_seed(100 * rank + 10 * epoch + b)
            yield torch.randn(2, 3, 8, 32, 32, generator=g)

    try:
        trainer = JepaTrainer(cfg, steps_per_epoch=2, out_dir=out, progress=False)
        assert trainer.dist.world_size == world and trainer.dist.rank == rank
        path = trainer.fit(make, resume=False)
        params = {f"online.{k}": v for k, v in trainer.online.state_dict().items()}
        params.update({f"target.{k}": v for k, v in trainer.target_encoder.state_dict().items()})
        torch.save({"params": params, "path": str(path)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_step_keeps_ranks_identical(tmp_path):
    port = _free_port()
    mp.spawn(_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)["params"]
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)["params"]
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    ckpt = torch.load(tmp_path / "latest.pth.tar", weights_only=True)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 2
    # each rank's mask generator state is saved, and they differ (ranks draw their own masks)
    assert len(ckpt["mask_rng"]) == 2 and not torch.equal(ckpt["mask_rng"][0], ckpt["mask_rng"][1])
    # the checkpoint holds the synchronised weights
    for k, v in ckpt["encoder"].items():
        assert k.startswith("module.backbone.")  # the release's DDP + wrapper names
        assert torch.equal(v, r0[f"online.encoder.{k[len('module.backbone.'):]}"])
    # and training moved them: the encoder differs from the fresh (seeded) init
    assert not torch.equal(ckpt["encoder"]["module.backbone.blocks.0.attn.qkv.weight"],
                           ckpt["target_encoder"]["module.backbone.blocks.0.attn.qkv.weight"])
