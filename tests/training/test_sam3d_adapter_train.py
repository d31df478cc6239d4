"""Lesion fine-tuning (3DSAM-adapter recipe) of the tiny sam3d_adapter variant on CPU: the loss falls,
frozen tensors stay bit-identical, resume is exact, the CLI trains and records what it trained."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from ctsam.training.lesion_data import LesionCase, LesionPatchSampler, lesion_components, prepare_lesion_case
from ctsam.training.lesion_loop import LesionTrainer, LesionTrainSettings, dice_ce_loss
from ctsam.volume import CTVolume, Geometry, LabelMap

FAST = LesionTrainSettings(
    variant="tiny",
    recipe="adapters",
    steps=3,
    batch_size=1,
    lr=2e-3,
    seed=3,
    augment=False,
    val_every=0,
    log_every=1,
    checkpoint_every=1,
    device="cpu",
)


def lesion_volume(shape=(72, 72, 72), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(hu int16, lesion labels uint8): an organ at 60 HU with a hypodense and a hyperdense sphere, noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    hu = np.full(shape, -80.0, np.float32)
    organ = ((z - c[0]) / 30) ** 2 + ((y - c[1]) / 30) ** 2 + ((x - c[2]) / 30) ** 2 <= 1
    hu[organ] = 60
    labels = np.zeros(shape, np.uint8)
    for k, (centre, r, delta) in enumerate((((30, 30, 40), 7, -40), ((44, 42, 28), 5, 45)), start=1):
        ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= r * r
        hu[ball] = 60 + delta
        labels[ball] = k
    hu += rng.normal(0, 8, size=shape).astype(np.float32)
    return np.rint(hu).astype(np.int16), labels


def lesion_case(seed: int = 0) -> LesionCase:
    hu, labels = lesion_volume(seed=seed)
    geom = Geometry(shape_zyx=hu.shape, spacing_xyz_mm=(1.0, 1.0, 1.0), origin_xyz_mm=(0.0, 0.0, 0.0))
    comps, _ = lesion_components(labels > 0)
    return LesionCase(
        f"case-{seed}",
        geom,
        hu,
        comps,
        np.argwhere(comps > 0).astype(np.int32),
        np.argwhere(hu > -50).astype(np.int32)[::7],
    )


def tiny_model(seed: int = 3):
    from ctsam.model import build_model

    torch.manual_seed(seed)
    model = build_model("sam3d_adapter", "tiny")
    model.with_preset("kits")
    return model


def sampler_for(model, *, augment: bool = False, seed: int = 0) -> LesionPatchSampler:
    from ctsam.training.lesion_data import SamplingSettings

    spec = model.input_spec
    return LesionPatchSampler(
        [lesion_case(0)],
        normalise=spec.normalise,
        zscore_sd=spec.zscore_mean_std[1],
        patch_size_zyx=spec.patch_size_zyx,
        seed=seed,
        settings=SamplingSettings(augment=augment, positive_fraction=1.0),
    )


def test_sam3d_adapter_train_sampler_is_deterministic_and_clicks_lie_in_the_lesion():
    model = tiny_model()
    s = sampler_for(model, augment=True)
    a, b = s.sample(4, 1), s.sample(4, 1)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.points_zyx, b.points_zyx)
    assert a.image.shape == tuple(model.input_spec.patch_size_zyx) and a.target.any()
    pos = a.points_zyx[a.point_labels == 1].astype(int)
    assert len(pos) == 10 and (a.point_labels == 0).sum() == 20
    assert a.target[tuple(pos.T)].all()
    assert not np.array_equal(s.sample(5, 1).image, a.image)


def test_sam3d_adapter_train_dice_ce_matches_its_definition():
    logits = torch.randn(2, 2, 4, 4, 4)
    target = torch.rand(2, 1, 4, 4, 4) > 0.6
    p = torch.softmax(logits, 1)[:, 1].flatten(1)
    t = target[:, 0].flatten(1).float()
    dice = 1 - (2 * (p * t).sum(1) + 1e-5) / (p.sum(1) + t.sum(1) + 1e-5)
    ce = torch.nn.functional.cross_entropy(logits, target[:, 0].long())
    torch.testing.assert_close(dice_ce_loss(logits, target), 0.5 * dice.mean() + 0.5 * ce)


def test_sam3d_adapter_train_tiny_loss_falls_on_cpu(tmp_path):
    model = tiny_model()
    trainer = LesionTrainer(dataclasses.replace(FAST, recipe="full"), sampler_for(model), tmp_path, model=model)
    batch = trainer.sampler.batch(0, 1)
    losses = [trainer.train_step(batch)["loss"] for _ in range(4)]  # each value is measured before its update
    assert losses[-1] < losses[0], losses


def test_sam3d_adapter_frozen_tensors_unchanged_after_train(tmp_path):
    from ctsam.model import apply_finetune_recipe

    probe = tiny_model()
    trainable_expected, total_expected = apply_finetune_recipe(probe, "adapters")
    frozen_names = {n for n, p in probe.module.named_parameters() if not p.requires_grad}
    assert frozen_names and trainable_expected < total_expected

    model = tiny_model()
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    trainer = LesionTrainer(FAST, sampler_for(model), tmp_path, model=model)
    assert (trainer.trainable, trainer.total) == (trainable_expected, total_expected)
    trainer.run(resume=False)
    after = model.module.state_dict()
    params = dict(model.module.named_parameters())
    changed = [k for k in params if not torch.equal(before[k], after[k])]
    assert changed, "nothing trained"
    assert not (set(changed) & frozen_names), sorted(set(changed) & frozen_names)[:5]
    for k in frozen_names:
        assert torch.equal(before[k], after[k]), k
    for k in after:  # buffers too
        if k not in params:
            assert torch.equal(before[k], after[k]), k
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert rec == {"kind": "parameters", "trainable": trainable_expected, "total": total_expected, "recipe": "adapters"}


def test_sam3d_adapter_train_full_recipe_trains_every_parameter_even_the_patch_embedding(tmp_path):
    """The published code embeds slices under ``no_grad`` (SAM's patch embedding is frozen there); with the
    ``full`` recipe (random init, the demo model) the patch embedding must learn too."""
    model = tiny_model()
    before = {k: v.detach().clone() for k, v in model.module.named_parameters()}
    trainer = LesionTrainer(
        dataclasses.replace(FAST, recipe="full", steps=2), sampler_for(model), tmp_path, model=model
    )
    assert trainer.trainable == trainer.total
    for step in range(2):  # two: the attention's ``lr`` scales the zero-initialised rel-pos tables
        trainer.train_step(trainer.sampler.batch(step, 1))
    after = dict(model.module.named_parameters())
    assert not torch.equal(
        before["image_encoder.patch_embed.proj.weight"], after["image_encoder.patch_embed.proj.weight"]
    )
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    # no gradient reaches what the published forward never calls: the 3 prompt encoders of the other
    # feature levels, and the token-to-image cross attention each published two-way block defines
    unused = ("prompt_encoders.0.", "prompt_encoders.1.", "prompt_encoders.2.")
    assert [k for k in unchanged if not k.startswith(unused) and ".cross_attn_token_to_image." not in k] == []


@pytest.mark.slow
def test_sam3d_adapter_train_resume_is_exact(tmp_path):
    settings = dataclasses.replace(FAST, steps=2, augment=True)
    full = LesionTrainer(settings, sampler_for(tiny_model(), augment=True), tmp_path / "full", model=tiny_model())
    full.run(resume=False)
    part = LesionTrainer(settings, sampler_for(tiny_model(), augment=True), tmp_path / "part", model=tiny_model())
    part.run(resume=False, until_step=1)
    assert part.latest_checkpoint().name == "step_000001"
    resumed = LesionTrainer(
        settings, sampler_for(tiny_model(), augment=True), tmp_path / "part", model=tiny_model(seed=99)
    )  # other weights: the checkpoint must replace them
    resumed.run(resume=True)
    assert resumed.step == 2
    a, b = full.model.module.state_dict(), resumed.model.module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"]) for i in sa)


def test_sam3d_adapter_train_resume_refuses_other_settings(tmp_path):
    from ctsam.errors import CheckpointError

    settings = dataclasses.replace(FAST, steps=1)
    LesionTrainer(settings, sampler_for(tiny_model()), tmp_path, model=tiny_model()).run(resume=False)
    other = LesionTrainer(
        dataclasses.replace(settings, recipe="full"), sampler_for(tiny_model()), tmp_path, model=tiny_model()
    )
    with pytest.raises(CheckpointError, match="other settings"):
        other.run(resume=True)


def test_sam3d_adapter_train_settings_refuse_bad_values():
    from ctsam.errors import ConfigError

    with pytest.raises(ConfigError, match="recipe"):
        LesionTrainSettings(recipe="lora")
    with pytest.raises(ConfigError, match="exclusive"):
        LesionTrainSettings(init="a.pth", sam_checkpoint="sam.pth")


def _write_case(folder, seed):
    from ctsam.io.image import write_ct, write_labelmap

    hu, labels = lesion_volume(seed=seed)
    geom = Geometry(shape_zyx=hu.shape, spacing_xyz_mm=(1.0, 1.0, 1.0), origin_xyz_mm=(0.0, 0.0, 0.0))
    folder.mkdir(parents=True, exist_ok=True)
    write_ct(folder / "ct.nii.gz", CTVolume(hu, geom))
    write_labelmap(folder / "lesions.nii.gz", LabelMap(labels, geom, {1: "lesion", 2: "lesion"}))


@pytest.mark.slow
def test_sam3d_adapter_train_cli_records_trainable_parameters_and_provenance(tmp_path, capsys):
    from ctsam.cli import main
    from ctsam.model import load_model

    for k in (0, 1):
        _write_case(tmp_path / f"c{k}", k)
    (tmp_path / "train.tsv").write_text("case_id\tct\tlabels\nc0\tc0/ct.nii.gz\tc0/lesions.nii.gz\n")
    (tmp_path / "val.tsv").write_text("case_id\tct\tlabels\nc1\tc1/ct.nii.gz\tc1/lesions.nii.gz\n")
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--model",
            "sam3d_adapter",
            "--variant",
            "tiny",
            "--preset",
            "kits",
            "--recipe",
            "adapters",
            "--data",
            str(tmp_path / "train.tsv"),
            "--val-data",
            str(tmp_path / "val.tsv"),
            "--out",
            str(out),
            "--steps",
            "2",
            "--checkpoint-every",
            "1",
            "--val-every",
            "0",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trainable parameters:" in printed and "recipe adapters" in printed
    prep = prepare_lesion_case(
        __import__("ctsam.training.data", fromlist=["read_table"]).read_table(tmp_path / "train.tsv")[0], spacing_mm=1.0
    )
    assert prep.n_lesions == 2
    model = load_model(out / "model.safetensors")
    meta = model.metadata
    assert model.family == "sam3d_adapter" and model.variant == "tiny"
    assert model.input_spec.preset == "kits"
    training = meta["training"]
    assert training["parameters"]["recipe"] == "adapters"
    assert 0 < training["parameters"]["trainable"] < training["parameters"]["total"]
    assert training["steps_done"] == 2 and training["validation"]["val_lesions"] == 2
    assert "val_dice_1click" in training["validation"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["parameters"]["trainable"] == training["parameters"]["trainable"]


def test_sam3d_adapter_train_cli_refuses_ctsam3d_flags(tmp_path):
    from ctsam.cli import main

    rc = main(
        [
            "train",
            "--model",
            "sam3d_adapter",
            "--finetune",
            "decoder",
            "--data",
            str(tmp_path / "x.tsv"),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 2
