"""Checkpoints: the published CT-SAM3D ``params.pth`` and ctsam's own safetensors files.

* A published checkpoint is a torch pickle whose dict key ``model_state_dict`` holds 428 entries
  (``restv2_tiny``). It is read with ``torch.load(weights_only=True, map_location="cpu")``, so no code
  in it can run; every key is renamed onto ctsam's modules by explicit rules, and a missing, unexpected
  or mis-shaped key raises :class:`~ctsam.errors.CheckpointError` naming and counting them (the
  published loader ignores them silently).
* The only published key not loaded is SAM's unused positional-encoding buffer (see ``DROPPED``).
* Its ``config.py`` is parsed with :mod:`ast` (never executed) for the HU window, spacing and patch.
* ctsam's own format is a safetensors file with ctsam key names and the :class:`ModelMeta` as JSON in
  the header metadata (key ``ctsam``), plus the same JSON in a sidecar ``<name>.json``.
"""

from __future__ import annotations

import ast
import functools
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ctsam.errors import CheckpointError
from ctsam.io.atomic import atomic_path, atomic_write_json
from ctsam.model.ctsam3d import FORMAT_VERSION, CtSam3D, ModelMeta
from ctsam.model.registry import MODEL_REGISTRY, PATCH_SIZE, build_model
from ctsam.provenance import sha256_file
from ctsam.resources import BUILTIN_PREFIX, resolve_model_path  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

PUBLISHED_STATE_KEY = "model_state_dict"
SAFETENSORS_META_KEY = "ctsam"

#: Published keys deliberately not loaded, with the reason.
DROPPED: dict[str, str] = {
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": "SAM leftover buffer (3 x 128); the click-map prompt encoder never reads it",
}

_Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], str]]


def _rules(pairs: list[tuple[str, Callable[[re.Match[str]], str]]]) -> list[_Rule]:
    return [(re.compile(p + r"$"), f) for p, f in pairs]


_STEM = {
    "proj.0": "conv1",
    "proj.1": "bn1",
    "proj.3": "conv2",
    "proj.4": "bn2",
    "proj.6": "project",
    "pos.pa_conv": "gate.conv",
    "norm": "norm",
}
_STEM_INV = {v: k for k, v in _STEM.items()}
_EMBED = {"proj": "proj", "pos.pa_conv": "gate.conv", "norm": "norm"}
_EMBED_INV = {v: k for k, v in _EMBED.items()}
_SPADE = {"mlp_shared.0": "shared", "mlp_gamma": "gamma", "mlp_beta": "beta"}
_SPADE_INV = {v: k for k, v in _SPADE.items()}

# published name -> ctsam name
_TO_CTSAM = _rules(
    [
        (
            r"image_encoder\.stem\.(proj\.[01346]|pos\.pa_conv|norm)\.(\w+)",
            lambda m: f"image_encoder.stages.0.embed.{_STEM[m[1]]}.{m[2]}",
        ),
        (
            r"image_encoder\.patch_([234])\.(proj|pos\.pa_conv|norm)\.(\w+)",
            lambda m: f"image_encoder.stages.{int(m[1]) - 1}.embed.{_EMBED[m[2]]}.{m[3]}",
        ),
        (
            r"image_encoder\.stage([1-4])\.(\d+)\.(.+)",
            lambda m: f"image_encoder.stages.{int(m[1]) - 1}.blocks.{m[2]}.{m[3]}",
        ),
        (
            r"image_encoder\.channel_mapper([1-4])\.(\w+)",
            lambda m: f"image_encoder.stages.{int(m[1]) - 1}.mapper.{m[2]}",
        ),
        (
            r"mask_decoder\.spade([1-5])\.norm_([01])\.(mlp_shared\.0|mlp_gamma|mlp_beta)\.(\w+)",
            lambda m: f"mask_decoder.levels.{int(m[1]) - 1}.block.norm_{m[2]}.{_SPADE[m[3]]}.{m[4]}",
        ),
        (
            r"mask_decoder\.spade([1-5])\.conv_([01])\.(\w+)",
            lambda m: f"mask_decoder.levels.{int(m[1]) - 1}.block.conv_{m[2]}.{m[3]}",
        ),
        (
            r"mask_decoder\.upscale([1-5])\.cna\.([01])\.(\w+)",
            lambda m: f"mask_decoder.levels.{int(m[1]) - 1}.up.{('conv', 'norm')[int(m[2])]}.{m[3]}",
        ),
        (r"mask_decoder\.mask_prediction_head\.0\.(\w+)", lambda m: f"mask_decoder.mask_head.{m[1]}"),
        (r"mask_decoder\.iou_prediction_head\.layers\.(\d+)\.(\w+)", lambda m: f"quality_head.layers.{m[1]}.{m[2]}"),
        (r"cpp_predictor\.model\.(.+)", lambda m: f"cross_patch.unet.model.{m[1]}"),
    ]
)

# ctsam name -> published name
_TO_PUBLISHED = _rules(
    [
        (
            r"image_encoder\.stages\.0\.embed\.(conv1|bn1|conv2|bn2|project|gate\.conv|norm)\.(\w+)",
            lambda m: f"image_encoder.stem.{_STEM_INV[m[1]]}.{m[2]}",
        ),
        (
            r"image_encoder\.stages\.([123])\.embed\.(proj|gate\.conv|norm)\.(\w+)",
            lambda m: f"image_encoder.patch_{int(m[1]) + 1}.{_EMBED_INV[m[2]]}.{m[3]}",
        ),
        (
            r"image_encoder\.stages\.([0-3])\.blocks\.(\d+)\.(.+)",
            lambda m: f"image_encoder.stage{int(m[1]) + 1}.{m[2]}.{m[3]}",
        ),
        (
            r"image_encoder\.stages\.([0-3])\.mapper\.(\w+)",
            lambda m: f"image_encoder.channel_mapper{int(m[1]) + 1}.{m[2]}",
        ),
        (
            r"mask_decoder\.levels\.([0-4])\.block\.norm_([01])\.(shared|gamma|beta)\.(\w+)",
            lambda m: f"mask_decoder.spade{int(m[1]) + 1}.norm_{m[2]}.{_SPADE_INV[m[3]]}.{m[4]}",
        ),
        (
            r"mask_decoder\.levels\.([0-4])\.block\.conv_([01])\.(\w+)",
            lambda m: f"mask_decoder.spade{int(m[1]) + 1}.conv_{m[2]}.{m[3]}",
        ),
        (
            r"mask_decoder\.levels\.([0-4])\.up\.(conv|norm)\.(\w+)",
            lambda m: f"mask_decoder.upscale{int(m[1]) + 1}.cna.{('conv', 'norm').index(m[2])}.{m[3]}",
        ),
        (r"mask_decoder\.mask_head\.(\w+)", lambda m: f"mask_decoder.mask_prediction_head.0.{m[1]}"),
        (r"quality_head\.layers\.(\d+)\.(\w+)", lambda m: f"mask_decoder.iou_prediction_head.layers.{m[1]}.{m[2]}"),
        (r"cross_patch\.unet\.model\.(.+)", lambda m: f"cpp_predictor.model.{m[1]}"),
    ]
)


def _apply(rules: list[_Rule], key: str) -> str | None:
    for pattern, fn in rules:
        m = pattern.match(key)
        if m:
            return fn(m)
    return None


def published_to_ctsam_key(key: str) -> str | None:
    """ctsam's name for a published state-dict key, or None when no rule knows it."""
    return _apply(_TO_CTSAM, key)


def ctsam_to_published_key(key: str) -> str | None:
    """The published name of a ctsam state-dict key, or None when no rule knows it."""
    return _apply(_TO_PUBLISHED, key)


# ---------------------------------------------------------------- architecture tables
def _meta_model(variant: str) -> CtSam3D:
    with torch.device("meta"):
        return build_model(variant)


@functools.cache
def expected_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """ctsam state-dict key -> shape for a registered variant (built on the meta device)."""
    return {k: tuple(v.shape) for k, v in _meta_model(variant).state_dict().items()}


@functools.cache
def expected_published_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    """Published key -> shape for a variant (without the dropped keys)."""
    out = {}
    for k, shape in expected_shapes(variant).items():
        pub = ctsam_to_published_key(k)
        if pub is None:  # a ctsam module without a published counterpart would be a bug in the rules
            raise AssertionError(f"no published name for ctsam key {k}")
        out[pub] = shape
    return out


def infer_variant(shapes: Mapping[str, tuple[int, ...]], *, published: bool) -> str:
    """The registered variant whose state dict matches ``shapes`` best (key and shape equal)."""
    best, best_score = None, -1
    for variant in MODEL_REGISTRY:
        table = expected_published_shapes(variant) if published else expected_shapes(variant)
        score = sum(1 for k, s in shapes.items() if table.get(k) == tuple(s))
        if score > best_score:
            best, best_score = variant, score
    assert best is not None
    return best


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(
    state: Mapping[str, torch.Tensor],
    expected: Mapping[str, tuple[int, ...]],
    *,
    path: str | os.PathLike[str],
    variant: str,
) -> None:
    """Raise CheckpointError when keys are missing, unexpected or mis-shaped (all counted and named)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(v.shape)} (expected {expected[k]})"
        for k, v in state.items()
        if k in expected and tuple(v.shape) != expected[k]
    ]
    if missing or unexpected or misshaped:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_names(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_names(unexpected)}")
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped: {_names(misshaped, 4)}")
        raise CheckpointError(
            f"checkpoint does not fit the {variant} architecture",
            path=path,
            expected=f"{len(expected)} entries of the {variant} state dict",
            found="; ".join(parts),
            fix="use the published CT-SAM3D ckpt_1000/params.pth (or a file converted from it by "
            "'ctsam model convert'); a partial or edited checkpoint would give wrong masks",
        )


# ---------------------------------------------------------------- reading files
def _sniff(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError as err:
        raise CheckpointError(
            "cannot read the checkpoint", path=path, found=str(err), fix="check the path and permissions"
        ) from err
    if len(head) < 9:
        raise CheckpointError(
            "checkpoint file is empty or truncated",
            path=path,
            found=f"{len(head)} bytes",
            fix="copy the checkpoint again",
        )
    if head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    if head[:4] == b"PK\x03\x04" or head[0] == 0x80:
        return "torch"  # torch zip archive, or a legacy pickle (protocol 2+)
    raise CheckpointError(
        "not a checkpoint ctsam can read",
        path=path,
        expected="a torch params.pth (zip or pickle) or a ctsam .safetensors file",
        found=f"file starting with {head[:8]!r}",
        fix="pass the published params.pth or the output of 'ctsam model convert'",
    )


def sniff_format(path: str | os.PathLike[str]) -> str:
    """``"safetensors"`` or ``"torch"`` from a file's first bytes (CheckpointError for anything else)."""
    return _sniff(Path(path))


def torch_load_weights(path: str | os.PathLike[str]) -> object:
    """``torch.load(weights_only=True, map_location="cpu")`` of a checkpoint file, with clear errors
    (nothing in the file is executed)."""
    path = Path(path)
    if _sniff(path) != "torch":
        raise CheckpointError(
            "expected a torch .pth checkpoint",
            path=path,
            found="a safetensors file",
            fix="load it with ctsam.model.load_model, or pass the original .pth",
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad/unsafe pickles
        unsafe = "weights_only" in str(err) or "Unsupported global" in str(err)
        raise CheckpointError(
            "checkpoint refused: it holds Python objects other than tensors"
            if unsafe
            else "checkpoint is unreadable (truncated or corrupt)",
            path=path,
            found=f"{type(err).__name__}: {str(err).splitlines()[0][:300]}",
            fix="ctsam never unpickles code; re-save only the state dict in a trusted environment "
            "(torch.save({'model_state_dict': sd}, 'params.pth'))"
            if unsafe
            else "download or copy the checkpoint again and compare its sha256",
        ) from err


def published_state_from_object(obj: object, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded published CT-SAM3D checkpoint object."""
    if isinstance(obj, Mapping) and PUBLISHED_STATE_KEY in obj:
        obj = obj[PUBLISHED_STATE_KEY]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            "checkpoint holds no state dict",
            path=path,
            expected=f"a dict with key '{PUBLISHED_STATE_KEY}' mapping names to tensors",
            found=type(obj).__name__,
            fix="pass the published ckpt_1000/params.pth",
        )
    return dict(obj)


def read_published_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a published ``params.pth`` (published key names), loaded without running any code.

    Accepts a dict holding ``model_state_dict`` (the published layout) or a plain state dict.
    """
    return published_state_from_object(torch_load_weights(path), path)


def check_finite(
    state: Mapping[str, torch.Tensor], *, path: str | os.PathLike[str], name: Callable[[str], str] = str
) -> None:
    """Raise CheckpointError naming the first tensor holding NaN or infinity (``name`` maps a key to
    the name shown, e.g. the published one)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                "checkpoint holds non-finite weights",
                path=path,
                expected="finite values in every tensor",
                found=f"{bad} NaN/inf value(s) in {name(key)} {tuple(value.shape)}",
                fix="the file is corrupt or came from a diverged training run; use another checkpoint",
            )


def parse_published_config(path: str | os.PathLike[str]) -> dict:
    """Literal settings of a published ``config.py`` as a nested dict, parsed with :mod:`ast`.

    Handles ``cfg.a.b = <literal>`` and ``cfg.a = {}`` / ``edict()`` / ``edict({...})``; assignments
    whose value is not a literal (``os.path.join(...)``) are skipped. Nothing is executed.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError) as err:
        raise CheckpointError(
            "cannot parse the checkpoint config.py",
            path=path,
            found=str(err),
            fix="pass the config.py shipped beside params.pth, or omit --config",
        ) from err
    out: dict = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        chain = []
        target = node.targets[0]
        while isinstance(target, (ast.Attribute, ast.Subscript)):
            if isinstance(target, ast.Attribute):
                chain.append(target.attr)
            elif isinstance(target.slice, ast.Constant) and isinstance(target.slice.value, str):
                chain.append(target.slice.value)
            else:
                break
            target = target.value
        if not isinstance(target, ast.Name) or not chain:
            continue
        chain.reverse()
        value = node.value
        if isinstance(value, ast.Call) and not value.keywords and len(value.args) <= 1:  # edict(...)
            value = value.args[0] if value.args else ast.Dict(keys=[], values=[])
        try:
            literal = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, RecursionError):
            continue
        d = out
        for name in chain[:-1]:
            d = d.setdefault(name, {}) if isinstance(d.get(name, {}), dict) else {}
        d[chain[-1]] = literal
    return out


def meta_from_config(config: Mapping, *, variant: str, path: str | os.PathLike[str]) -> dict:
    """ModelMeta fields read from a parsed config.py; raises CheckpointError when it contradicts."""
    fields: dict = {}
    dataset = config.get("dataset", {}) if isinstance(config.get("dataset"), dict) else {}
    norm = dataset.get("normalization_params")
    if isinstance(norm, dict) and "min_value" in norm and "max_value" in norm:
        lo, hi = float(norm["min_value"]), float(norm["max_value"])
        if not lo < hi:
            raise CheckpointError(
                "config.py has an empty HU window",
                path=path,
                found=f"min_value {lo}, max_value {hi}",
                fix="check the config.py",
            )
        fields["hu_window"] = (lo, hi)
    if "target_spacing" in dataset:
        fields["spacing_mm"] = float(dataset["target_spacing"])
    if "patch_size" in dataset and list(dataset["patch_size"]) != [PATCH_SIZE] * 3:
        raise CheckpointError(
            "config.py patch size is not supported",
            path=path,
            expected=f"[{PATCH_SIZE}, {PATCH_SIZE}, {PATCH_SIZE}]",
            found=str(dataset["patch_size"]),
            fix="only 64^3 CT-SAM3D checkpoints are supported",
        )
    network = config.get("network")
    if isinstance(network, str) and network != variant:
        raise CheckpointError(
            "config.py names another network than the weights hold",
            path=path,
            expected=variant,
            found=network,
            fix="pass the config.py of this checkpoint",
        )
    return fields


# ---------------------------------------------------------------- building models
def _materialise(variant: str, state: Mapping[str, torch.Tensor], meta: ModelMeta, path: Path) -> CtSam3D:
    model = _meta_model(variant)
    ref = model.state_dict()
    typed = {k: v.to(dtype=ref[k].dtype) for k, v in state.items()}
    model.load_state_dict(typed, strict=True, assign=True)
    model.meta = meta
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise CheckpointError("checkpoint left tensors uninitialised", path=path, found=_names(left))
    return model


def published_to_model(
    state: Mapping[str, torch.Tensor],
    *,
    path: str | os.PathLike[str],
    meta_fields: Mapping | None = None,
    sha256: str | None = None,
) -> CtSam3D:
    """Build the matching variant from a published-format state dict (strict; see module docstring)."""
    path = Path(path)
    kept = {k: v for k, v in state.items() if k not in DROPPED}
    variant = infer_variant({k: tuple(v.shape) for k, v in kept.items()}, published=True)
    check_state_dict(kept, expected_published_shapes(variant), path=path, variant=variant)
    check_finite(kept, path=path)
    renamed = {published_to_ctsam_key(k): v for k, v in kept.items()}
    dropped = {k: DROPPED[k] for k in state if k in DROPPED}
    meta = ModelMeta(
        variant=variant,
        patch_size=PATCH_SIZE,
        sha256=sha256,
        source=path.name,
        dropped_keys=dropped,
        **dict(meta_fields or {}),
    )
    return _materialise(variant, renamed, meta, path)


def load_published(
    path: str | os.PathLike[str], *, config_path: str | os.PathLike[str] | None = None, loaded: object | None = None
) -> CtSam3D:
    """Model from a published ``params.pth``; ``config_path`` defaults to a ``config.py`` beside it.
    ``loaded``: the file's object when the caller already read it with :func:`torch_load_weights`."""
    path = Path(path)
    state = published_state_from_object(torch_load_weights(path) if loaded is None else loaded, path)
    if config_path is None and (path.parent / "config.py").is_file():
        config_path = path.parent / "config.py"
    model = published_to_model(state, path=path, sha256=sha256_file(path))
    if config_path is not None:
        fields = meta_from_config(parse_published_config(config_path), variant=model.variant, path=config_path)
        model.meta = ModelMeta.from_dict({**model.meta.to_dict(), **fields})
        log.info(
            "read HU window %s and spacing %s mm from %s", model.meta.hu_window, model.meta.spacing_mm, config_path
        )
    return model


def load_safetensors(path: str | os.PathLike[str]) -> CtSam3D:
    """Model from a ctsam safetensors file (ctsam key names, ModelMeta in the header)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            header = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            "safetensors checkpoint is unreadable (truncated or corrupt)",
            path=path,
            found=str(err)[:300],
            fix="convert the published params.pth again",
        ) from err
    try:
        meta = ModelMeta.from_dict(json.loads(header[SAFETENSORS_META_KEY]))
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(
            "safetensors file carries no ctsam metadata",
            path=path,
            expected=f"header metadata key '{SAFETENSORS_META_KEY}'",
            found=str(sorted(header)),
            fix="create it with 'ctsam model convert'",
        ) from err
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(
            "checkpoint written by a newer ctsam",
            path=path,
            expected=f"format version <= {FORMAT_VERSION}",
            found=str(meta.format_version),
            fix="upgrade ctsam",
        )
    if meta.variant not in MODEL_REGISTRY:
        raise CheckpointError(
            "unknown model variant in checkpoint", path=path, expected=str(sorted(MODEL_REGISTRY)), found=meta.variant
        )
    check_state_dict(state, expected_shapes(meta.variant), path=path, variant=meta.variant)
    check_finite(state, path=path)
    return _materialise(meta.variant, state, meta, path)


def load_ctsam3d(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> CtSam3D:
    """Load a published ``params.pth`` or a ctsam ``.safetensors`` file; the model is in eval mode.

    The variant is inferred from the tensor shapes (params.pth) or read from the metadata
    (safetensors). ``config_path``: a published ``config.py`` (only for params.pth; by default one
    beside it is used when present).

    Raises:
        CheckpointError: unreadable, unsafe or mismatched checkpoint (nothing in it is executed).
    """
    path = resolve_model_path(path)
    kind = _sniff(path)
    model = load_published(path, config_path=config_path) if kind == "torch" else load_safetensors(path)
    log.info("loaded %s (%s, %.1f M parameters) from %s", model.variant, kind, model.n_parameters() / 1e6, path)
    return model.to(device).eval()


# ---------------------------------------------------------------- writing files
def save_safetensors(
    model: CtSam3D,
    path: str | os.PathLike[str],
    *,
    sidecar: bool = True,
    extra_metadata: Mapping[str, object] | None = None,
) -> Path:
    """Write the model (ctsam key names) and its metadata atomically; optionally a JSON sidecar.

    ``extra_metadata``: more JSON-serialisable entries (e.g. training provenance under ``training``),
    stored in the header as key ``ctsam_<name>`` and in the sidecar beside the ModelMeta fields.
    """
    path = Path(path)
    meta_json = json.dumps(model.meta.to_dict(), sort_keys=True)
    header = {SAFETENSORS_META_KEY: meta_json}
    for name, value in (extra_metadata or {}).items():
        header[f"{SAFETENSORS_META_KEY}_{name}"] = json.dumps(value, sort_keys=True)
    write_safetensors(model.state_dict(), path, header)
    if sidecar:
        atomic_write_json(path.with_suffix(".json"), {**model.meta.to_dict(), **dict(extra_metadata or {})})
    return path


def write_safetensors(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike[str], metadata: Mapping[str, str]
) -> Path:
    """Write a state dict (as contiguous CPU tensors) to a safetensors file atomically with a canonical
    header: same tensors + metadata, same bytes.

    The safetensors library keeps ``__metadata__`` in a hash map, so with more than one entry the order of
    its keys in the header (and the file's bytes) changes from one process to the next. Here the header
    is written again with the metadata keys sorted and the tensor entries in file order.
    """
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    data = save(tensors, metadata=dict(metadata))
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    ordered: dict = {"__metadata__": dict(sorted(meta.items()))} if meta else {}
    ordered.update(sorted(header.items(), key=lambda kv: (kv[1]["data_offsets"], kv[0])))
    text = json.dumps(ordered, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little"))
        fh.write(text)
        fh.write(memoryview(data)[8 + n :])
    return Path(path)


def read_safetensors_metadata(path: str | os.PathLike[str]) -> dict:
    """The ctsam header entries of a safetensors file as a dict: ``meta`` plus each extra entry."""
    from safetensors import safe_open

    path = resolve_model_path(path)
    with safe_open(str(path), framework="pt", device="cpu") as fh:
        header = fh.metadata() or {}
    out = {}
    for key, value in header.items():
        if key == SAFETENSORS_META_KEY:
            out["meta"] = json.loads(value)
        elif key.startswith(SAFETENSORS_META_KEY + "_"):
            out[key[len(SAFETENSORS_META_KEY) + 1 :]] = json.loads(value)
    return out


def to_published_state_dict(model: CtSam3D) -> dict[str, torch.Tensor]:
    """The model's weights under the published CT-SAM3D names (plus the unused SAM buffer, as zeros)."""
    out = {ctsam_to_published_key(k): v.detach().to("cpu") for k, v in model.state_dict().items()}
    out["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.zeros(3, 128)
    return out  # type: ignore[return-value]


def save_published(model: CtSam3D, path: str | os.PathLike[str]) -> Path:
    """Write a published-format ``params.pth`` ({'model_state_dict': ...}) atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({PUBLISHED_STATE_KEY: to_published_state_dict(model)}, tmp)
    return path


def convert_checkpoint(
    params_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> ModelMeta:
    """``ctsam model convert``: published params.pth (+ config.py) -> ctsam safetensors + JSON sidecar."""
    model = load_published(params_path, config_path=config_path)
    save_safetensors(model, out_path)
    return model.meta
