"""Promptable 3D networks behind one seam; torch only.

Public interface (code outside ``ctsam.model`` uses only these names):

* :func:`load_model` -- any model file, recognised by content (published CT-SAM3D ``params.pth``,
  published 3DSAM-adapter dict, ctsam ``.safetensors``, ``builtin:<name>``) -> :class:`PromptableModel`;
* :func:`build_model` (family, variant) -- randomly initialised; :data:`FAMILIES`;
* :func:`save_model` / :func:`save_published` -- safetensors + metadata / the family's published layout;
* :class:`PromptableModel`, :class:`OneClickSegmenter` (``logits``, ``foreground_probability``),
  :class:`MaskRefiner` (``encode``/``decode``/``cross_patch_heatmap``), :class:`InputSpec`;
* :data:`PRESETS` -- published 3DSAM-adapter input conventions;
* :func:`apply_finetune_recipe`, :func:`load_sam_image_encoder` -- 3DSAM-adapter fine-tuning;
* :func:`resolve_device`, :func:`set_deterministic` -- where and how a network runs;
* :func:`click_maps` -- Gaussian click maps exactly as CT-SAM3D builds them.
"""

from ctsam.model.api import InputSpec, MaskRefiner, OneClickSegmenter, PromptableModel
from ctsam.model.checkpoint import (
    convert_checkpoint,
    load_ctsam3d,
    save_safetensors,
    to_published_state_dict,
)
from ctsam.model.checkpoint import (
    read_safetensors_metadata as read_model_metadata,
)
from ctsam.model.checkpoint import (
    save_published as save_published_ctsam3d,
)
from ctsam.model.ctsam3d import CtSam3D, ModelMeta, PatchFeatures
from ctsam.model.device import resolve_device, set_deterministic
from ctsam.model.families import (
    FAMILIES,
    build_model,
    describe,
    load_model,
    save_model,
    save_published,
    wrap_module,
)
from ctsam.model.presets import PRESETS, Preset, get_preset
from ctsam.model.prompt import click_maps
from ctsam.model.registry import MODEL_REGISTRY, build_micro, build_restv2_tiny
from ctsam.model.sam3d_finetune import RECIPES, apply_finetune_recipe, load_sam_image_encoder

__all__ = [
    "FAMILIES",
    "MODEL_REGISTRY",
    "PRESETS",
    "RECIPES",
    "CtSam3D",
    "InputSpec",
    "MaskRefiner",
    "ModelMeta",
    "OneClickSegmenter",
    "PatchFeatures",
    "Preset",
    "PromptableModel",
    "apply_finetune_recipe",
    "resolve_device",
    "set_deterministic",
    "build_micro",
    "build_model",
    "build_restv2_tiny",
    "click_maps",
    "convert_checkpoint",
    "describe",
    "get_preset",
    "load_ctsam3d",
    "load_model",
    "load_sam_image_encoder",
    "read_model_metadata",
    "save_model",
    "save_published",
    "save_published_ctsam3d",
    "save_safetensors",
    "to_published_state_dict",
    "wrap_module",
]
