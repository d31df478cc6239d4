"""CT image file (NIfTI/NRRD/MHA) -> int16 HU NIfTI + JSON sidecar: the convert stage for non-DICOM inputs."""

from __future__ import annotations

import os
from pathlib import Path

from ctsam.errors import InputDataError


def import_ct(image: str | os.PathLike[str], output: str | os.PathLike[str], *, sidecar: str | None = None,
              case: str | None = None) -> None:
    """Read a CT image file, check it, write it as int16 HU NIfTI plus a JSON sidecar (no source path).

    Raises :class:`InputDataError` when the values cannot be HU (outside -2048..32767 after rounding).
    """
    import numpy as np

    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, write_ct
    from ctsam.provenance import sha256_file
    from ctsam.volume import CTVolume

    ct = read_ct(image, case=case)
    values = np.rint(ct.array) if np.issubdtype(ct.array.dtype, np.floating) else ct.array
    lo, hi = float(values.min()), float(values.max())
    if lo < -2048 or hi > 32767:
        raise InputDataError(
            "image values are not Hounsfield units",
            case=case,
            path=image,
            expected="values within -2048..32767 HU",
            found=f"range {lo:g}..{hi:g} ({ct.array.dtype})",
            fix="pass a CT in HU (apply the rescale slope/intercept first)",
        )
    write_ct(output, CTVolume(array=values.astype(np.int16), geometry=ct.geometry))
    out = Path(output)
    side = Path(sidecar) if sidecar else out.with_name(out.name.split(".nii")[0] + ".json")
    atomic_write_json(side, {
        "source": {"kind": "image", "sha256": sha256_file(image), "dtype": str(ct.array.dtype)},
        "geometry": ct.geometry.to_dict(),
        "hu_range": [lo, hi],
    })
