"""Data parallel: a 2-process gloo run (each rank half of the global batch) matches one process.

SGD is used here so that weights compare gradients directly: AdamW's first steps are ~lr * sign(grad),
which turns float rounding in near-zero gradient entries into lr-sized weight differences.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ctsam.training.distributed import DistInfo  # noqa: E402
from ctsam.training.loop import Trainer  # noqa: E402
from tests.training.test_train import FAST, _sampler  # noqa: E402

SETTINGS = dataclasses.replace(
    FAST, steps=2, batch_size=2, augment_probability=1.0, threads=1, checkpoint_every=100, optimizer="sgd", lr=0.05
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    info = DistInfo(
        rank=rank, world_size=world, local_rank=rank, master_addr="127.0.0.1", master_port=port, launcher="test"
    )
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    trainer = Trainer(SETTINGS, _sampler(), out, dist_info=info)
    trainer.run(resume=False)
    if rank == 0:
        torch.save({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, Path(out) / "weights.pt")
    trainer.close()


@pytest.mark.slow
def test_two_process_gloo_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    single = Trainer(SETTINGS, _sampler(), tmp_path / "single")
    single.run(resume=False)
    ref = single.model.state_dict()

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    got = torch.load(tmp_path / "ddp" / "weights.pt", weights_only=True)
    assert ref.keys() == got.keys()
    bad = [k for k in ref if not torch.allclose(ref[k], got[k], rtol=1e-4, atol=1e-6)]
    assert not bad, bad[:5]
    # the runs really trained: weights moved far more than the two runs differ
    init = Trainer(SETTINGS, _sampler(), tmp_path / "init").model.state_dict()
    moved = max(float((init[k].float() - got[k].float()).abs().max()) for k in ref)
    differ = max(float((ref[k].float() - got[k].float()).abs().max()) for k in ref)
    assert moved > 100 * differ, (moved, differ)
