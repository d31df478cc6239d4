"""Every model a run may need: where it comes from, its licence, size and sha256, and the local cache.

Compute nodes of a cluster are offline, so weights are fetched once on a login node
(``ctsam weights fetch NAME``) into the cache folder (``weights.cache_dir``, else ``$CTSAM_WEIGHTS``,
else ``~/.cache/ctsam/weights``) and checked offline before a run (``ctsam weights check``; the
workflow's preflight does the same). A fetch records the file's sha256 and size in
``<cache>/<name>/fetched.json``; where the publisher gives no checksum the registry says so
("unknown, recorded on first fetch") and later checks compare against that first record.

TotalSegmentator's models are unpacked into TotalSegmentator's own weights folder
(``coarse.totalsegmentator.weights_path``, ``$TOTALSEG_WEIGHTS_PATH``; :mod:`ctsam.coarse.weights`
checks them file by file).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from ctsam.errors import ConfigError, ExternalToolError, InputDataError

log = logging.getLogger(__name__)

UNKNOWN = "unknown, recorded on first fetch"
TS_RELEASE = "https://github.com/wasserth/TotalSegmentator/releases/download/v2.0.0-weights"
DEMO_PREFIX = "builtin:demo_"
#: marker of the demo phantoms in ct.json (DICOM Manufacturer / ManufacturerModelName, ctsam/demo/dicom.py)
DEMO_MANUFACTURER = ("ctsam", "demo phantom")


@dataclass(frozen=True)
class WeightEntry:
    """One downloadable model file.

    Attributes:
        name: registry name (``ctsam weights fetch NAME``).
        model: what it is.
        used_by: the stage and config key that use it.
        source: a direct URL, or ``manual: ...`` where the publisher offers no direct link.
        licence: the licence as published (or what is unknown about it).
        size: size as published, or :data:`UNKNOWN`.
        sha256: the publisher's checksum, or None (then the first fetch records it).
        filename: the file name in the cache.
        unpack_totalseg: a TotalSegmentator model zip, unpacked into TotalSegmentator's weights folder.
    """

    name: str
    model: str
    used_by: str
    source: str
    licence: str
    size: str
    sha256: str | None
    filename: str
    unpack_totalseg: bool = False

    @property
    def direct(self) -> bool:
        return not self.source.startswith("manual:")


def _ts_entry(task_id: int, folder: str, what: str, size: str = UNKNOWN) -> WeightEntry:
    return WeightEntry(
        name=f"totalseg_{task_id}",
        model=f"TotalSegmentator 'total' task model {task_id} ({what})",
        used_by="coarse (coarse.backend auto/totalsegmentator; coarse.totalsegmentator.mode)",
        source=f"{TS_RELEASE}/{folder}.zip",
        licence="Apache-2.0 (TotalSegmentator README: the 'total' task is free for commercial use)",
        size=size,
        sha256=None,
        filename=f"{folder}.zip",
        unpack_totalseg=True,
    )


_3DSAM_SOURCE = (
    "manual: OneDrive links in the README of https://github.com/med-air/3DSAM-adapter "
    "(no direct URL); download, then `ctsam weights fetch {name} --from file:///path/to/file`"
)
_3DSAM_LICENCE = "unspecified (the med-air/3DSAM-adapter repository has no LICENSE file): ask the authors"

REGISTRY: dict[str, WeightEntry] = {
    e.name: e
    for e in (
        _ts_entry(
            291,
            "Dataset291_TotalSegmentator_part1_organs_1559subj",
            "1.5 mm, organs",
            "234 MB zip (TotalSegmentator issue #517)",
        ),
        _ts_entry(292, "Dataset292_TotalSegmentator_part2_vertebrae_1532subj", "1.5 mm, vertebrae"),
        _ts_entry(293, "Dataset293_TotalSegmentator_part3_cardiac_1559subj", "1.5 mm, cardiac"),
        _ts_entry(294, "Dataset294_TotalSegmentator_part4_muscles_1559subj", "1.5 mm, muscles"),
        _ts_entry(295, "Dataset295_TotalSegmentator_part5_ribs_1559subj", "1.5 mm, ribs"),
        _ts_entry(297, "Dataset297_TotalSegmentator_total_3mm_1559subj", "3 mm, mode fast and robust crop"),
        _ts_entry(
            298, "Dataset298_TotalSegmentator_total_6mm_1559subj", "6 mm, mode fastest and the roi_subset locator"
        ),
        WeightEntry(
            name="ctsam3d",
            model="CT-SAM3D restv2_tiny, published params.pth (ckpt_1000; convert with `ctsam model convert`)",
            used_by="refine (refine.checkpoint)",
            source="https://www.modelscope.cn/models/xiuan123/CT-SAM3D/resolve/master/ckpt_1000/params.pth",
            licence="unknown for the weights (code Apache-2.0; a third-party note says Apache-2.0): check the ModelScope page",
            size=UNKNOWN,
            sha256=None,
            filename="params.pth",
        ),
        *(
            WeightEntry(
                name=f"3dsam_{ds}",
                model=f"3DSAM-adapter tumour model, {label}",
                used_by="lesions (3DSAM-adapter; needs sam_vit_b too)",
                source=_3DSAM_SOURCE.format(name=f"3dsam_{ds}"),
                licence=_3DSAM_LICENCE,
                size=UNKNOWN,
                sha256=None,
                filename=f"{ds}.pth",
            )
            for ds, label in (
                ("kits", "KiTS21 kidney tumour"),
                ("lits", "LiTS17 liver tumour"),
                ("msd_pancreas", "MSD pancreas tumour"),
                ("msd_colon", "MSD colon cancer"),
            )
        ),
        WeightEntry(
            name="sam_vit_b",
            model="Segment Anything ViT-B (sam_vit_b_01ec64.pth), the encoder 3DSAM-adapter starts from",
            used_by="lesions (3DSAM-adapter)",
            source="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
            licence="Apache-2.0 (facebookresearch/segment-anything)",
            size="about 375 MB (358 MiB) as published",
            sha256=None,
            filename="sam_vit_b_01ec64.pth",
        ),
    )
}


# ---------------------------------------------------------------------------------------------- cache
def cache_dir(configured: str | None = None, env: dict[str, str] | None = None) -> Path:
    """``weights.cache_dir``, else ``$CTSAM_WEIGHTS``, else ``~/.cache/ctsam/weights``."""
    env = dict(os.environ) if env is None else env
    if configured:
        return Path(configured).expanduser()
    if env.get("CTSAM_WEIGHTS"):
        return Path(env["CTSAM_WEIGHTS"]).expanduser()
    return Path.home() / ".cache" / "ctsam" / "weights"


def entry(name: str) -> WeightEntry:
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        raise ConfigError(
            f"unknown weights name '{name}'",
            expected=", ".join(REGISTRY),
            found=name,
            fix=f"did you mean '{close[0]}'?" if close else "see `ctsam weights list`",
        )
    return REGISTRY[name]


def record_path(cache: Path, name: str) -> Path:
    return cache / name / "fetched.json"


def read_record(cache: Path, name: str) -> dict | None:
    path = record_path(cache, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- fetch
def fetch(
    name: str, cache: Path, *, source: str | None = None, totalseg_root: Path | None = None, timeout_s: float = 60.0
) -> dict:
    """Download ``name`` (or copy it from ``source``, e.g. ``file:///...``) into the cache; return its record.

    The file is written under a temporary name next to its destination and renamed when complete;
    its sha256 is checked against the registry (when known) or recorded. TotalSegmentator zips are
    unpacked into ``totalseg_root``.
    """
    from ctsam.progress import Progress

    e = entry(name)
    url = source or e.source
    if not source and not e.direct:
        raise InputDataError(
            f"'{name}' has no direct download",
            expected="a URL or file:// source",
            found=e.source,
            fix=f"download it by hand, then: ctsam weights fetch {name} --from file:///PATH",
        )
    folder = cache / name
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / e.filename
    fd, tmp_name = tempfile.mkstemp(prefix=f".{e.filename}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    size = 0
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
                total = int(resp.headers.get("Content-Length") or 0)
                progress = Progress(max(total // (1 << 20), 1), f"fetch {name} (MiB)")
                done_mib = 0
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
                    h.update(block)
                    size += len(block)
                    if size // (1 << 20) > done_mib:
                        progress.update(size // (1 << 20) - done_mib)
                        done_mib = size // (1 << 20)
        except (urllib.error.URLError, OSError, ValueError) as err:
            reason = getattr(err, "reason", None) or err
            raise ExternalToolError(
                f"cannot download '{name}'",
                path=url,
                found=str(reason),
                fix=(
                    "run `ctsam weights fetch` on a machine with internet (a cluster login node), then make the "
                    f"cache folder {cache} visible to the compute nodes (CTSAM_WEIGHTS or weights.cache_dir); "
                    f"or fetch from a local copy: ctsam weights fetch {name} --from file:///PATH"
                ),
            ) from err
        digest = h.hexdigest()
        if e.sha256 and digest != e.sha256:
            raise InputDataError(
                f"'{name}' does not have the published sha256",
                path=url,
                expected=e.sha256,
                found=digest,
                fix="download it again from the official source",
            )
        previous = read_record(cache, name)
        if previous and previous.get("sha256") != digest:
            log.warning("%s: sha256 differs from the first fetch (%s -> %s)", name, previous.get("sha256"), digest)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    record = {
        "name": name,
        "file": e.filename,
        "source": url,
        "sha256": digest,
        "size_bytes": size,
        "sha256_published": e.sha256,
        "fetched_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if e.unpack_totalseg:
        root = totalseg_root or _default_ts_root()
        _unpack(dest, root, name)
        record["unpacked_to"] = str(root)
    from ctsam.io.atomic import atomic_write_json

    atomic_write_json(record_path(cache, name), record)
    log.info("fetched %s: %d bytes, sha256 %s -> %s", name, size, digest, dest)
    return record


def _default_ts_root() -> Path:
    from ctsam.coarse.weights import default_weights_root

    return default_weights_root()


def _unpack(zip_path: Path, root: Path, name: str) -> None:
    if not zipfile.is_zipfile(zip_path):
        raise InputDataError(f"'{name}' is not a zip archive", path=zip_path, fix="fetch it again")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.namelist():
                target = (staging / member).resolve()
                if not str(target).startswith(str(staging.resolve())):
                    raise InputDataError(f"'{name}' zip holds a path outside its folder", found=member)
            zf.extractall(staging)
        for item in staging.iterdir():
            final = root / item.name
            if final.exists():
                shutil.rmtree(final) if final.is_dir() else final.unlink()
            os.replace(item, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class CheckRow:
    name: str
    status: str  # ok | missing | mismatch | not fetched
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def check_cache(cache: Path, names: list[str]) -> list[CheckRow]:
    """Offline: each fetched file is present with the sha256 recorded at its fetch (or published)."""
    rows = []
    for name in names:
        e = entry(name)
        record = read_record(cache, name)
        if record is None:
            rows.append(CheckRow(name, "not fetched", f"no {record_path(cache, name)}"))
            continue
        if e.unpack_totalseg:
            rows.append(CheckRow(name, "ok", f"unpacked to {record.get('unpacked_to')} (files: ctsam weights check)"))
            continue
        path = cache / name / e.filename
        if not path.is_file():
            rows.append(CheckRow(name, "missing", f"{path} is gone (fetched {record.get('fetched_utc')})"))
            continue
        digest = sha256_of(path)
        expected = e.sha256 or record.get("sha256")
        if digest != expected:
            rows.append(CheckRow(name, "mismatch", f"sha256 {digest} != {expected} ({path})"))
        else:
            rows.append(CheckRow(name, "ok", f"{path} sha256 {digest}"))
    return rows


# ---------------------------------------------------------------------------------------------- demo
def is_demo_phantom_ct(ct_path: str | os.PathLike[str]) -> bool:
    """Whether the CT's sidecar (``ct.json`` beside ``ct.nii.gz``) carries the demo phantom marker."""
    path = Path(ct_path)
    side = path.with_name(path.name.split(".nii")[0].split(".nrrd")[0] + ".json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (data.get("manufacturer"), data.get("manufacturer_model_name")) == DEMO_MANUFACTURER


def is_demo_weights(checkpoint: str | os.PathLike[str]) -> bool:
    """``builtin:demo_*``, or the file it resolves to (the workflow passes resolved paths)."""
    from ctsam.resources import resource_path

    text = str(checkpoint)
    if text.startswith(DEMO_PREFIX):
        return True
    path = Path(text)
    try:
        return path.name.startswith("demo_") and path.resolve().parent == resource_path("models").resolve()
    except OSError:
        return False


def check_demo_weights(
    checkpoint: str | os.PathLike[str], ct_path: str | os.PathLike[str], *, allow: bool, case: str | None = None
) -> bool:
    """Refuse ``builtin:demo_*`` weights on a CT that is not a demo phantom unless ``allow``.

    Returns True when demo weights are used on a non-phantom CT (allowed): callers record it.
    """
    if not is_demo_weights(checkpoint) or is_demo_phantom_ct(ct_path):
        return False
    if not allow:
        raise ConfigError(
            f"'{checkpoint}' was trained on demo phantoms only; this CT is not a demo phantom",
            case=case,
            expected="real CT-SAM3D weights for real CT",
            found=f"refine.checkpoint: {checkpoint}",
            fix="ctsam weights fetch ctsam3d (on a login node) and set refine.checkpoint to the file; or set "
            "weights.allow_demo_weights: true to run the demo model anyway (report and manifest say so)",
        )
    log.warning(
        "DEMO WEIGHTS on a real CT: %s was trained on phantoms only (weights.allow_demo_weights: true)", checkpoint
    )
    return True
