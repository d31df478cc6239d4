"""The promptable 3D network (CT-SAM3D architecture); torch only.

Public interface:

* :func:`load_ctsam3d` -- published ``params.pth`` or ctsam ``.safetensors`` -> :class:`CtSam3D` (eval);
* :meth:`CtSam3D.predict_patch`, :meth:`CtSam3D.encode` / :meth:`CtSam3D.decode`,
  :meth:`CtSam3D.cross_patch_heatmap`, :attr:`CtSam3D.meta`;
* :func:`click_maps` -- Gaussian click maps exactly as CT-SAM3D builds them;
* :func:`build_model` and :data:`MODEL_REGISTRY` -- randomly initialised variants.
"""

from ctsam.model.checkpoint import (
    convert_checkpoint,
    load_ctsam3d,
    save_published,
    save_safetensors,
    to_published_state_dict,
)
from ctsam.model.ctsam3d import CtSam3D, ModelMeta, PatchFeatures
from ctsam.model.prompt import click_maps
from ctsam.model.registry import MODEL_REGISTRY, build_micro, build_model, build_restv2_tiny

__all__ = [
    "MODEL_REGISTRY",
    "CtSam3D",
    "ModelMeta",
    "PatchFeatures",
    "build_micro",
    "build_model",
    "build_restv2_tiny",
    "click_maps",
    "convert_checkpoint",
    "load_ctsam3d",
    "save_published",
    "save_safetensors",
    "to_published_state_dict",
]
