"""Training loop: the loss falls on a fixed batch, resume is exact, fine-tuning from a published params.pth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from ctsam.training.data import PatchSampler
from ctsam.training.loop import Trainer, TrainSettings
from tests.training.test_train_data import synthetic_case

FAST = TrainSettings(
    variant="micro",
    steps=3,
    batch_size=1,
    lr=2e-3,
    warmup_steps=0,
    rounds=1,
    quality_weight=0.1,
    augment_probability=0.0,
    val_every=0,
    log_every=1,
    checkpoint_every=1,
    device="cpu",
    seed=5,
)


def _sampler(seed: int = 0, neighbour_stride: int = 0) -> PatchSampler:
    return PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=seed, neighbour_stride=neighbour_stride)


def test_training_steps_lower_the_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(FAST, _sampler(), tmp_path)
    batch = trainer.sampler.batch(0, 1)
    losses = [trainer.train_step(batch, 0)["loss"] for _ in range(3)]  # each value is measured before its update
    assert losses[2] < losses[1] < losses[0], losses


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    settings = dataclasses.replace(FAST, steps=2, augment_probability=1.0)
    full = Trainer(settings, _sampler(), tmp_path / "full")
    full.run(resume=False)
    part = Trainer(settings, _sampler(), tmp_path / "part")
    part.run(resume=False, until_step=1)
    assert part.step == 1 and part.latest_checkpoint().name == "step_000001"
    resumed = Trainer(settings, _sampler(), tmp_path / "part")  # a new process would start like this
    resumed.run(resume=True)
    assert resumed.step == 2
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one per step, across the interruption


def test_resume_refuses_other_settings(tmp_path):
    from ctsam.errors import CheckpointError

    settings = dataclasses.replace(FAST, steps=1)
    Trainer(settings, _sampler(), tmp_path).run(resume=False)
    other = Trainer(dataclasses.replace(settings, batch_size=2), _sampler(), tmp_path)
    with pytest.raises(CheckpointError, match="other settings"):
        other.run(resume=True)


def test_coarse_mask_prompt_training_starts_from_the_coarse_mask(tmp_path):
    from ctsam.model import load_model
    from ctsam.training.loop import start_prompts

    settings = dataclasses.replace(FAST, coarse_prompt_probability=1.0)
    sampler = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=0, coarse_prompt_probability=1.0)
    trainer = Trainer(settings, sampler, tmp_path)
    batch = trainer.sampler.batch(0, 1)
    coarse = batch[0].coarse
    assert coarse is not None and coarse.shape == batch[0].target.shape
    seqs, prev = start_prompts([batch[0].target], [coarse], "cpu", False)
    assert torch.equal(prev[0, 0], torch.from_numpy(coarse.astype(np.float32)))
    assert coarse[seqs[0].points_zyx[0]] and seqs[0].positive == [True]  # first click inside the coarse mask
    seqs, prev = start_prompts([batch[0].target], [None], "cpu", False)
    assert prev is None and batch[0].target[seqs[0].points_zyx[0]]
    losses = [trainer.train_step(batch, 0)["loss"] for _ in range(3)]
    assert losses[2] < losses[0], losses
    assert load_model(trainer.export(tmp_path / "m.safetensors")).metadata["coarse_prompt_trained"]
    measured = Trainer(dataclasses.replace(settings, val_samples=2), sampler, tmp_path / "v", val_sampler=sampler)
    r = load_model(measured.export(tmp_path / "v.safetensors")).metadata["quality_r"]
    assert r is not None and -1.0 <= r <= 1.0  # quality head measured on the validation patches
    val = measured.validate()
    assert 0.0 < val["val_coarse_dice"] < 1.0 and 0.0 <= val["val_coarse_refined_dice"] <= 1.0
    assert not Trainer(FAST, _sampler(), tmp_path / "plain")._export_model_view().meta.coarse_prompt_trained


@pytest.mark.slow
def test_cross_patch_network_trains_on_neighbour_pairs(tmp_path):
    settings = dataclasses.replace(FAST, cpp=True, quality_weight=0.0)
    trainer = Trainer(settings, _sampler(neighbour_stride=12), tmp_path)
    before = {k: v.clone() for k, v in trainer.model.cross_patch.state_dict().items()}
    batch = trainer.sampler.batch(0, 1)
    assert batch[0].neighbour_image is not None
    m1 = trainer.train_step(batch, 0)
    m2 = trainer.train_step(batch, 0)
    assert m2["cpp_loss"] < m1["cpp_loss"]
    after = trainer.model.cross_patch.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    path = trainer.export(tmp_path / "m.safetensors")
    from ctsam.model import load_model

    assert load_model(path).metadata["cpp_trained"]


@pytest.mark.slow
def test_finetune_decoder_from_published_params(tmp_path, shared_fixtures):
    from tests.model.fixture import write_fixture_params

    manifest = shared_fixtures / "ctsam3d" / "ctsam3d_state_dict_manifest.json"
    if not manifest.is_file():
        pytest.skip(f"fixture manifest not found at {manifest}")
    params = write_fixture_params(manifest, tmp_path / "params.pth")
    settings = dataclasses.replace(FAST, variant="restv2_tiny", init=str(params), finetune="decoder", steps=1)
    trainer = Trainer(settings, _sampler(), tmp_path / "run")
    assert trainer.model.variant == "restv2_tiny"
    enc0 = {k: v.clone() for k, v in trainer.model.image_encoder.state_dict().items()}
    dec0 = {k: v.clone() for k, v in trainer.model.mask_decoder.state_dict().items()}
    trainer.run(resume=False)
    enc1, dec1 = trainer.model.image_encoder.state_dict(), trainer.model.mask_decoder.state_dict()
    assert all(torch.equal(enc0[k], enc1[k]) for k in enc0)  # frozen, BatchNorm statistics included
    assert any(not torch.equal(dec0[k], dec1[k]) for k in dec0)
    from ctsam.model import load_model, read_model_metadata

    out = trainer.export(tmp_path / "ft.safetensors", {"note": "test"})
    assert load_model(out).variant == "restv2_tiny"
    assert read_model_metadata(out)["training"]["settings"]["finetune"] == "decoder"
