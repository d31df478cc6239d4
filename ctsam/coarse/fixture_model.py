"""A tiny random-weight nnU-Net v2 model tree that the real TotalSegmentator code runs offline.

**For tests, CI and demos only: the weights are random, the masks it predicts are noise.**

TotalSegmentator has no model-path option, but when the folder it expects for a task exists under
``TOTALSEG_WEIGHTS_PATH`` it uses it as-is (no download, no checksum). This module writes such
folders, in exactly the layout ``ctsam.coarse.weights`` checks::

    <weights_dir>/Dataset297_TotalSegmentator_total_3mm_1559subj/
        nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres/
            dataset.json  plans.json  fold_0/checkpoint_final.pth

Each model is a 3-stage ``PlainConvUNet`` (features 4-8-16, patch 32^3; about 12k parameters for
the 118-output models) built with nnunetv2's own ``get_network_from_plans``, so the state dict
matches what nnU-Net instantiates at inference.

The checkpoint stores ``trainer_name="nnUNetTrainer"`` although the *folder* names TotalSegmentator's
subclass trainer: nnunetv2 finds the top-level ``nnUNetTrainer`` without importing its trainer
sub-packages, whose import chain (primus -> timm -> torchvision) crashes when CPU torch meets the
CUDA torchvision wheel from PyPI (totalsegmentator.md sections 9.5 and 10). Real TotalSegmentator
checkpoints name subclass trainers and need a working torchvision.

Needs torch and nnunetv2 (imported inside the functions).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ctsam.coarse.weights import TS_MODELS, TsModel
from ctsam.io.atomic import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

#: The trainer class stored in fixture checkpoints (see the module docstring).
FIXTURE_TRAINER_NAME = "nnUNetTrainer"


def _labels_for(model: TsModel) -> dict[str, int]:
    from ctsam import labels

    if model.part_global_ids is None:
        items = [(ts.name, ts.index) for ts in labels.ts_total_classes()]
    else:
        first, last = model.part_global_ids
        items = [(labels.ts_total_name(gid), gid - first + 1) for gid in range(first, last + 1)]
    return {"background": 0, **dict(items)}


def _plans(model: TsModel) -> dict:
    spacing = [model.spacing_mm] * 3
    return {
        "dataset_name": model.folder,
        "plans_name": model.plans,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3000.0,
                "mean": 100.0,
                "median": 80.0,
                "min": -1000.0,
                "percentile_00_5": -900.0,
                "percentile_99_5": 1500.0,
                "std": 300.0,
            }
        },
        "configurations": {
            model.configuration: {
                "data_identifier": f"{model.plans}_{model.configuration}",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [32, 32, 32],
                "median_image_size_in_voxels": [64, 64, 64],
                "spacing": spacing,
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
                "resampling_fn_seg": "resample_data_or_seg_to_shape",
                "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
                "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
                "resampling_fn_probabilities_kwargs": {
                    "is_seg": False,
                    "order": 1,
                    "order_z": 0,
                    "force_separate_z": None,
                },
                "batch_dice": False,
                "architecture": {
                    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                    "arch_kwargs": {
                        "n_stages": 3,
                        "features_per_stage": [4, 8, 16],
                        "conv_op": "torch.nn.modules.conv.Conv3d",
                        "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
                        "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                        "n_conv_per_stage": [1, 1, 1],
                        "n_conv_per_stage_decoder": [1, 1],
                        "conv_bias": True,
                        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                        "dropout_op": None,
                        "dropout_op_kwargs": None,
                        "nonlin": "torch.nn.LeakyReLU",
                        "nonlin_kwargs": {"inplace": True},
                    },
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
            }
        },
    }


def build_fixture_model(weights_dir: str | os.PathLike[str], task_id: int, *, seed: int = 0) -> Path:
    """Write one random-weight model folder for TotalSegmentator ``task_id`` (291-295, 297, 298).

    Returns the trainer folder (``.../<trainer>__<plans>__3d_fullres``). Existing files are replaced.
    """
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    model = TS_MODELS[task_id]
    plans = _plans(model)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": _labels_for(model),
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    out = Path(weights_dir) / model.folder / model.trainer_folder
    (out / "fold_0").mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "plans.json", json.dumps(plans, indent=2) + "\n")
    atomic_write_text(out / "dataset.json", json.dumps(dataset, indent=2) + "\n")

    manager = PlansManager(plans)
    cfg = manager.get_configuration(model.configuration)
    n_out = manager.get_label_manager(dataset).num_segmentation_heads
    torch.manual_seed(seed + task_id)
    network = get_network_from_plans(
        cfg.network_arch_class_name,
        cfg.network_arch_init_kwargs,
        cfg.network_arch_init_kwargs_req_import,
        input_channels=1,
        output_channels=n_out,
        allow_init=True,
        deep_supervision=False,
    )
    checkpoint = {
        "network_weights": network.state_dict(),
        "trainer_name": FIXTURE_TRAINER_NAME,
        "inference_allowed_mirroring_axes": None,
        "init_args": {"plans": plans, "configuration": model.configuration, "fold": 0, "dataset_json": dataset},
        "ctsam_fixture": "random weights, for tests only",
    }
    with atomic_path(out / "fold_0" / "checkpoint_final.pth") as tmp:
        torch.save(checkpoint, tmp)
    n_params = sum(p.numel() for p in network.parameters())
    log.info("wrote random-weight fixture model %s (%d outputs, %d parameters) to %s", task_id, n_out, n_params, out)
    return out


def build_fixture_weights(
    weights_dir: str | os.PathLike[str], task_ids: tuple[int, ...] = (297,), *, seed: int = 0
) -> Path:
    """Write fixture models for every id in ``task_ids`` under ``weights_dir``; returns ``weights_dir``."""
    for task_id in task_ids:
        build_fixture_model(weights_dir, task_id, seed=seed)
    return Path(weights_dir)
