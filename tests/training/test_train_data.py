"""Fast tests of the training data, clicks, losses and launcher parsing (no network training)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctsam.errors import InputDataError
from ctsam.training import distributed
from ctsam.training.clicks import ClickSequence, add_correction_clicks, error_click, first_click, start_sequences
from ctsam.training.data import AugmentSettings, PatchSampler, PreparedCase, prepare_case, read_table
from ctsam.training.loop import TrainSettings, lr_factor
from ctsam.training.losses import dice_loss, focal_loss, gaussian_heatmap, heatmap_loss, segmentation_loss
from ctsam.volume import CTVolume, Geometry, LabelMap


def synthetic_case(case_id: str = "syn-1", shape=(72, 80, 80)) -> PreparedCase:
    """A model-frame case: a sphere (label 1, 60 HU) and a slab (label 2, 400 HU) in fat (-100 HU)."""
    z, y, x = np.indices(shape)
    labels = np.zeros(shape, np.uint8)
    labels[(z - 36) ** 2 + (y - 40) ** 2 + (x - 30) ** 2 <= 10**2] = 1
    labels[20:50, 30:50, 52:60] = 2
    hu = np.full(shape, -100, np.int16)
    hu[labels == 1] = 60
    hu[labels == 2] = 400
    frame = Geometry(shape_zyx=shape, spacing_xyz_mm=(1.5, 1.5, 1.5), origin_xyz_mm=(0.0, 0.0, 0.0))
    centres = {k: np.argwhere(labels == k).astype(np.int32) for k in (1, 2)}
    return PreparedCase(case_id, frame, hu, labels, {1: "liver", 2: "sternum"}, centres)


def test_sampler_is_a_pure_function_of_seed_step_index():
    case = synthetic_case()
    a = PatchSampler([case], hu_window=(-125, 225), seed=3, augment=AugmentSettings(probability=1.0))
    b = PatchSampler([case], hu_window=(-125, 225), seed=3, augment=AugmentSettings(probability=1.0))
    s1, s2 = a.sample(5, 1), b.sample(5, 1)
    assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.target, s2.target)
    assert s1.image.shape == (64, 64, 64) and s1.image.dtype == np.float32
    assert 0.0 <= s1.image.min() and s1.image.max() <= 1.0
    assert s1.target.any()
    assert not np.array_equal(a.sample(6, 1).image, s1.image)


def test_rank_shares_make_up_the_global_batch():
    sampler = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=0)
    full = sampler.batch(2, 4)
    parts = sampler.batch(2, 4, rank=0, world_size=2) + sampler.batch(2, 4, rank=1, world_size=2)
    assert all(np.array_equal(f.image, p.image) for f, p in zip(full, parts))
    with pytest.raises(ValueError, match="not divisible"):
        sampler.batch(0, 3, rank=0, world_size=2)


def test_neighbour_pairs_hold_the_structure():
    sampler = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=1, neighbour_stride=8)
    s = sampler.sample(0, 0)
    assert s.neighbour_image is not None and s.neighbour_target.sum() >= 8


def test_first_click_is_interior_and_error_click_targets_the_largest_error():
    t = np.zeros((64, 64, 64), bool)
    t[10:30, 10:30, 10:30] = True
    (zyx, pos) = first_click(t)
    assert pos and all(18 <= v <= 21 for v in zyx)
    pred = t.copy()
    pred[10:30, 10:30, 10:20] = False  # missed half: false negative region
    pred[40:44, 40:44, 40:44] = True  # small false positive
    zyx, pos = error_click(pred, t)
    assert pos and t[zyx] and not pred[zyx]
    assert error_click(t, t) is None
    assert first_click(np.zeros((64, 64, 64), bool)) == ((32, 32, 32), False)


def test_click_sequences_cap_and_tensors():
    t = np.zeros((64, 64, 64), bool)
    t[5:15, 20:30, 40:50] = True
    seqs = start_sequences([t])
    empty = np.zeros_like(t)
    for _ in range(5):
        add_correction_clicks(seqs, [empty], [t], max_points=3)
    assert len(seqs[0]) == 3
    pts, lab = ClickSequence.tensors(seqs + [ClickSequence()])
    assert pts.shape == (2, 3, 3) and lab[1].tolist() == [-1, -1, -1]
    z, y, x = seqs[0].points_zyx[0]
    assert pts[0, 0].tolist() == [x, y, z]


def test_losses():
    target = torch.zeros(2, 1, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 10
    bad = -good
    assert segmentation_loss(good, target) < 0.01 < segmentation_loss(bad, target)
    assert focal_loss(good, target).shape == (2,) and dice_loss(good, target).shape == (2,)
    hm = gaussian_heatmap([(4, 4, 4), None], 8)
    assert hm[0, 0, 4, 4, 4] == 1.0 and hm[1].sum() == 0
    assert heatmap_loss(hm, hm) == 0


def test_lr_schedule_warmup_and_decay():
    s = TrainSettings(steps=100, warmup_steps=10, lr_decay_at=0.8, lr_decay_factor=0.1)
    assert lr_factor(0, s) == pytest.approx(0.1)
    assert lr_factor(9, s) == 1.0 and lr_factor(50, s) == 1.0
    assert lr_factor(80, s) == pytest.approx(0.1)


def test_settings_reject_bad_values():
    from ctsam.errors import ConfigError

    with pytest.raises(ConfigError, match="fine-tuning mode"):
        TrainSettings(finetune="encoder")


def test_launcher_environments():
    assert distributed.detect({}).world_size == 1
    t = distributed.detect(
        {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234"}
    )
    assert (t.rank, t.world_size, t.local_rank, t.master_addr, t.master_port, t.launcher) == (
        1,
        4,
        1,
        "n1",
        1234,
        "torchrun",
    )
    s = distributed.detect(
        {
            "SLURM_PROCID": "5",
            "SLURM_NTASKS": "8",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_NODELIST": "gpu[03-05,07]",
            "SLURM_JOB_ID": "4242",
        }
    )
    assert (s.rank, s.world_size, s.local_rank, s.master_addr, s.master_port) == (5, 8, 1, "gpu03", 29742)
    assert distributed.first_host("cpu1,cpu2") == "cpu1"


def test_table_and_cache(tmp_path):
    from ctsam.io.image import write_ct, write_labelmap

    case = synthetic_case()
    g = Geometry(shape_zyx=case.hu.shape, spacing_xyz_mm=(1.0, 1.0, 2.0), origin_xyz_mm=(5.0, -3.0, 10.0))
    write_ct(tmp_path / "ct.nii.gz", CTVolume(case.hu, g))
    write_labelmap(tmp_path / "lab.nii.gz", LabelMap(case.labels, g, case.names))
    (tmp_path / "t.tsv").write_text("case_id\tct\tlabels\nc1\tct.nii.gz\tlab.nii.gz\n")
    rows = read_table(tmp_path / "t.tsv")
    assert rows[0].ct == tmp_path / "ct.nii.gz" and rows[0].coarse is None
    p1 = prepare_case(rows[0], cache_dir=tmp_path / "cache")
    p2 = prepare_case(rows[0], cache_dir=tmp_path / "cache")  # from the cache
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    assert np.array_equal(p1.hu, p2.hu) and np.array_equal(p1.labels, p2.labels) and p1.frame == p2.frame
    assert set(p1.centres) == {1, 2} and p1.frame.spacing_xyz_mm == (1.5, 1.5, 1.5)
    (tmp_path / "bad.tsv").write_text("case_id\timage_file\nc1\tct.nii.gz\n")
    with pytest.raises(InputDataError, match="no CT column"):
        read_table(tmp_path / "bad.tsv")
    with pytest.raises(InputDataError, match="not found"):
        read_table(tmp_path / "missing.tsv")


def test_labels_on_a_flipped_grid_are_resampled_not_refused():
    from ctsam.errors import SpaceMismatchError
    from ctsam.training.data import align_labels

    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1:3, 1:4, 2:5] = 3
    g = Geometry(shape_zyx=(4, 5, 6), spacing_xyz_mm=(1.0, 1.0, 2.0), origin_xyz_mm=(0.0, 0.0, 0.0))
    flipped = Geometry(
        shape_zyx=(4, 5, 6),
        spacing_xyz_mm=(1.0, 1.0, 2.0),
        origin_xyz_mm=(0.0, 4.0, 0.0),
        direction=((1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0)),
    )
    on_flipped = LabelMap(lab[:, ::-1, :].copy(), flipped, {3: "liver"})
    aligned = align_labels(on_flipped, g)
    assert aligned.geometry == g and np.array_equal(aligned.array, lab)
    far = Geometry(shape_zyx=(4, 5, 6), spacing_xyz_mm=(1.0, 1.0, 2.0), origin_xyz_mm=(50.0, 0.0, 0.0))
    with pytest.raises(SpaceMismatchError, match="not on the same voxel grid"):
        align_labels(LabelMap(lab, far, {3: "liver"}), g)


def test_simulated_coarse_masks_are_blocky_deterministic_and_close():
    from ctsam.training.data import simulate_coarse

    z, y, x = np.mgrid[:64, :64, :64]
    target = (z - 32) ** 2 + (y - 30) ** 2 / 0.6 + (x - 34) ** 2 / 1.4 <= 15**2
    dices = []
    for k in range(12):
        a = simulate_coarse(target, np.random.default_rng([k]))
        b = simulate_coarse(target, np.random.default_rng([k]))
        assert a is not None and np.array_equal(a, b)
        dices.append(2 * (a & target).sum() / (a.sum() + target.sum()))
        assert not np.array_equal(a, target)
    assert 0.75 < min(dices) and max(dices) < 0.999, dices
    tiny = np.zeros((64, 64, 64), bool)
    tiny[10, 10, 10] = True  # a single voxel can vanish on a coarse grid, like a thin rib
    results = [simulate_coarse(tiny, np.random.default_rng([k])) for k in range(12)]
    assert any(r is None for r in results)
    for r in results:  # what survives stays within one coarse cell (<= 3 voxels) plus one voxel of leak
        if r is not None:
            assert np.abs(np.argwhere(r) - 10).max() <= 3


def test_sampler_attaches_coarse_masks_at_the_asked_rate():
    sampler = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=2, coarse_prompt_probability=0.5)
    items = [sampler.sample(s, 0) for s in range(20)]
    with_coarse = [it for it in items if it.coarse is not None]
    assert 3 <= len(with_coarse) <= 17
    again = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=2, coarse_prompt_probability=0.5)
    assert all((a.coarse is None) == (again.sample(s, 0).coarse is None) for s, a in enumerate(items))
    plain = PatchSampler([synthetic_case()], hu_window=(-125, 225), seed=2)
    assert all(np.array_equal(plain.sample(s, 0).target, a.target) for s, a in enumerate(items))  # same patches
