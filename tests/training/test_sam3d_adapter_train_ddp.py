"""Data parallel lesion training: a 2-process gloo run (each rank half of the global batch) matches one
process (SGD, so that weights compare gradients directly; see tests/training/test_train_ddp.py)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

from ctsam.training.distributed import DistInfo
from ctsam.training.lesion_loop import LesionTrainer
from tests.training.test_sam3d_adapter_train import FAST, sampler_for, tiny_model
from tests.training.test_train_ddp import _free_port

SETTINGS = dataclasses.replace(
    FAST,
    recipe="adapters",
    steps=1,
    batch_size=2,
    augment=True,
    threads=1,
    checkpoint_every=100,
    optimizer="sgd",
    lr=0.05,
)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    info = DistInfo(
        rank=rank, world_size=world, local_rank=rank, master_addr="127.0.0.1", master_port=port, launcher="test"
    )
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    model = tiny_model()
    trainer = LesionTrainer(SETTINGS, sampler_for(model, augment=True), out, dist_info=info, model=model)
    trainer.run(resume=False)
    if rank == 0:
        torch.save({k: v.contiguous() for k, v in model.module.state_dict().items()}, Path(out) / "weights.pt")
    trainer.close()


@pytest.mark.slow
def test_sam3d_adapter_train_two_process_gloo_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    model = tiny_model()
    init = {k: v.clone() for k, v in model.module.state_dict().items()}
    LesionTrainer(SETTINGS, sampler_for(model, augment=True), tmp_path / "single", model=model).run(resume=False)
    ref = model.module.state_dict()
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    got = torch.load(tmp_path / "ddp" / "weights.pt", weights_only=True)
    assert ref.keys() == got.keys()
    bad = [k for k in ref if not torch.allclose(ref[k], got[k], rtol=1e-4, atol=1e-6)]
    assert not bad, bad[:5]
    moved = max(float((init[k].float() - got[k].float()).abs().max()) for k in ref)
    differ = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    assert moved > 100 * differ, (moved, differ)
