"""Registry of model families and the one loader that recognises a model file by its content.

=================  =========================================================  ============================
family             files recognised                                          variants
=================  =========================================================  ============================
``ctsam3d``        published ``params.pth`` (``model_state_dict``), ctsam    ``restv2_tiny``, ``micro``
                   ``.safetensors`` whose metadata has no family / ctsam3d
``sam3d_adapter``  published dict (``encoder_dict``, ``feature_dict``,       ``vit_b``, ``tiny``
                   ``decoder_dict``), ctsam ``.safetensors`` (family in meta)
=================  =========================================================  ============================

``builtin:<name>`` names ``ctsam/resources/models/<name>.safetensors``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import torch

from ctsam.errors import CheckpointError
from ctsam.io.atomic import atomic_path, atomic_write_json
from ctsam.model import checkpoint as ck
from ctsam.model import ctsam3d_family, sam3d_family
from ctsam.model.api import MaskRefiner, OneClickSegmenter, PromptableModel
from ctsam.model.ctsam3d import CtSam3D
from ctsam.model.registry import MODEL_REGISTRY as CTSAM3D_VARIANTS
from ctsam.model.registry import build_model as build_ctsam3d
from ctsam.model.sam3d_adapter import VARIANTS as SAM3D_VARIANTS
from ctsam.provenance import sha256_file
from ctsam.resources import resolve_model_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    name: str
    variants: tuple[str, ...]
    build: Callable[[str], PromptableModel]
    description: str


FAMILIES: dict[str, Family] = {
    "ctsam3d": Family(
        "ctsam3d",
        tuple(CTSAM3D_VARIANTS),
        lambda v: ctsam3d_family.wrap(build_ctsam3d(v)),
        "CT-SAM3D promptable anatomy refiner (encode once, decode clicks + previous mask)",
    ),
    "sam3d_adapter": Family(
        "sam3d_adapter",
        tuple(SAM3D_VARIANTS),
        sam3d_family.build,
        "3DSAM-adapter one-click tumour segmenter (SAM ViT-B with 3D adapters)",
    ),
}


def wrap_module(module: torch.nn.Module) -> PromptableModel:
    """The seam view of a bare network (e.g. the module a training loop holds); shares its tensors."""
    if isinstance(module, PromptableModel):
        return module
    if isinstance(module, CtSam3D):
        return ctsam3d_family.wrap(module)
    from ctsam.model.sam3d_adapter import Sam3dAdapterNet

    if isinstance(module, Sam3dAdapterNet):
        variant = next((v for v, c in SAM3D_VARIANTS.items() if c == module.config), "custom")
        return sam3d_family.Sam3dAdapterModel(module, variant=variant)
    raise TypeError(f"not a network of a known family: {type(module).__name__}")


@overload
def build_model(family: Literal["sam3d_adapter"], variant: str) -> OneClickSegmenter: ...
@overload
def build_model(family: Literal["ctsam3d"], variant: str) -> MaskRefiner: ...
@overload
def build_model(family: str, variant: str) -> PromptableModel: ...
def build_model(family: str, variant: str) -> PromptableModel:
    """A randomly initialised model (seed torch first for reproducible weights)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    if variant not in fam.variants:
        raise ValueError(f"unknown {family} variant {variant!r}; known: {', '.join(fam.variants)}")
    return fam.build(variant)


def read_header(path: str | os.PathLike[str]) -> dict[str, str]:
    """The raw safetensors header metadata of a file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            "safetensors checkpoint is unreadable (truncated or corrupt)",
            path=path,
            found=str(err)[:300],
            fix="write or copy the file again",
        ) from err


def family_of_header(header: Mapping[str, str], path: str | os.PathLike[str]) -> tuple[str, dict]:
    """(family, metadata dict) of a ctsam safetensors header."""
    try:
        meta = json.loads(header[ck.SAFETENSORS_META_KEY])
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            "safetensors file carries no ctsam metadata",
            path=path,
            expected=f"header metadata key '{ck.SAFETENSORS_META_KEY}'",
            found=str(sorted(header)),
            fix="create it with 'ctsam model convert' or ctsam.model.save_model",
        ) from err
    family = meta.get("family", "ctsam3d") if isinstance(meta, dict) else None
    if family not in FAMILIES:
        raise CheckpointError(
            "unknown model family in checkpoint",
            path=path,
            expected=", ".join(FAMILIES),
            found=str(family),
            fix="upgrade ctsam",
        )
    return family, meta


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            return {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            "safetensors checkpoint is unreadable (truncated or corrupt)",
            path=path,
            found=str(err)[:300],
            fix="write or copy the file again",
        ) from err


def _no_preset(family: str, preset: str | None, path: Path) -> None:
    if preset:
        raise CheckpointError(
            "a preset applies only to 3DSAM-adapter models",
            path=path,
            found=f"--preset {preset} for a {family} model",
            fix="drop --preset",
        )


def load_model(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    device: str | torch.device = "cpu",
    config_path: str | os.PathLike[str] | None = None,
    require_preset: bool = True,
) -> PromptableModel:
    """Load any model file ctsam knows, recognised by content (see the module docstring); eval mode.

    Args:
        path: a file or ``builtin:<name>``.
        preset: input convention of a 3DSAM-adapter model (``kits``, ``lits``, ``msd_pancreas``,
            ``msd_colon``); needed for a published .pth, overrides the one stored in a .safetensors.
        device: torch device.
        config_path: a published CT-SAM3D ``config.py`` (ctsam3d .pth only; default: one beside it).
        require_preset: refuse a published 3DSAM-adapter .pth without ``preset`` (False: load it without
            an intensity convention, e.g. to inspect it).

    Raises:
        CheckpointError: unreadable, unsafe, unknown or mismatched file; a preset that does not apply.
    """
    path = resolve_model_path(path)
    kind = ck.sniff_format(path)
    if preset is not None:
        from ctsam.model.presets import PRESETS

        if preset not in PRESETS:
            raise CheckpointError(
                "unknown preset",
                path=path,
                expected=", ".join(PRESETS),
                found=preset,
                fix="pass one of the published presets",
            )
    model: PromptableModel
    if kind == "safetensors":
        family, meta = family_of_header(read_header(path), path)
        if family == "ctsam3d":
            _no_preset(family, preset, path)
            model = ctsam3d_family.wrap(ck.load_safetensors(path))
        else:
            # sha256: the source checkpoint's when the metadata names one, else this file's own
            model = sam3d_family.from_safetensors(_read_tensors(path), meta, path=path, sha256=sha256_file(path))
            if preset:
                if model.input_spec.preset not in (None, preset):
                    log.warning("preset %s overrides the stored preset %s of %s", preset, model.input_spec.preset, path)
                model.with_preset(preset)
    else:
        obj = ck.torch_load_weights(path)
        if isinstance(obj, Mapping) and sam3d_family.is_published(obj):
            if not preset and require_preset:
                raise CheckpointError(
                    "a published 3DSAM-adapter checkpoint needs its preset",
                    path=path,
                    expected="--preset kits | lits | msd_pancreas | msd_colon",
                    found="no preset",
                    fix="pass the preset of the dataset the checkpoint "
                    "was trained on, or convert it once with 'ctsam model convert --preset'",
                )
            model = sam3d_family.from_published(obj, path=path, preset=preset, sha256=sha256_file(path))
            del obj
        else:
            _no_preset("ctsam3d", preset, path)
            model = ctsam3d_family.wrap(ck.load_published(path, config_path=config_path, loaded=obj))
    log.info("loaded %s %s (%s values) from %s", model.family, model.variant, f"{model.n_parameters():,}", path)
    return model.to(device).eval()


def save_model(
    model: PromptableModel,
    path: str | os.PathLike[str],
    *,
    metadata: Mapping[str, Any] | None = None,
    sidecar: bool = True,
) -> Path:
    """Write a model as safetensors with its metadata (family, variant, input spec, provenance, and
    ``metadata``'s extra keys) atomically, plus a JSON sidecar ``<name>.json``. Same model, same bytes."""
    path = Path(path)
    if isinstance(model, ctsam3d_family.Ctsam3dModel):
        return ck.save_safetensors(model.module, path, sidecar=sidecar, extra_metadata=metadata)
    if not isinstance(model, sam3d_family.Sam3dAdapterModel):
        raise TypeError(f"cannot save a {type(model).__name__}")
    header_json = sam3d_family.header_json(model, metadata)
    ck.write_safetensors(model.module.state_dict(), path, {ck.SAFETENSORS_META_KEY: header_json})
    if sidecar:
        atomic_write_json(path.with_suffix(".json"), json.loads(header_json))
    return path


def save_published(model: PromptableModel | CtSam3D, path: str | os.PathLike[str]) -> Path:
    """Write the model in its family's published .pth layout (torch.save, atomic)."""
    path = Path(path)
    if isinstance(model, CtSam3D):
        return ck.save_published(model, path)
    if isinstance(model, ctsam3d_family.Ctsam3dModel):
        return ck.save_published(model.module, path)
    if not isinstance(model, sam3d_family.Sam3dAdapterModel):
        raise TypeError(f"cannot save a {type(model).__name__}")
    with atomic_path(path) as tmp:
        torch.save(sam3d_family.to_published(model), tmp)
    return path


def describe(model: PromptableModel) -> dict:
    """What ``ctsam model info`` prints."""
    return {
        "family": model.family,
        "variant": model.variant,
        "n_parameters": model.n_parameters(),
        "sha256": model.sha256,
        "input_spec": model.input_spec.to_dict(),
        "output_classes": list(model.output_classes),
        "metadata": model.metadata,
    }
