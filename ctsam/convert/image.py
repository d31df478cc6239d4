"""CT image file (NIfTI/NRRD/MHA) -> int16 HU NIfTI + JSON sidecar: the convert stage for non-DICOM inputs."""

from __future__ import annotations

import os
from pathlib import Path


def import_ct(
    image: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    sidecar: str | None = None,
    case: str | None = None,
    config: dict | None = None,
) -> None:
    """Read a CT image file, check it, write it as int16 HU NIfTI plus a JSON sidecar (no source path).

    Raises :class:`ctsam.guards.GuardError` (an :class:`InputDataError`) when the image fails an
    input guard (config section ``guards``): non-finite voxels, values that cannot be HU, spacing
    or size out of bounds. Nothing is written then.
    """
    import numpy as np

    from ctsam.guards import GuardSettings, check_ct
    from ctsam.io.atomic import atomic_write_json
    from ctsam.io.image import read_ct, write_ct
    from ctsam.provenance import sha256_file
    from ctsam.volume import CTVolume

    ct = read_ct(image, case=case)
    values = ct.array
    if np.issubdtype(values.dtype, np.floating):
        values = np.rint(values) if np.isfinite(values).all() else values  # non-finite: refused below
    lo, hi = check_ct(values, ct.geometry, GuardSettings.from_config(config or {}), case=case)
    write_ct(output, CTVolume(array=values.astype(np.int16), geometry=ct.geometry))
    out = Path(output)
    side = Path(sidecar) if sidecar else out.with_name(out.name.split(".nii")[0] + ".json")
    atomic_write_json(
        side,
        {
            "source": {"kind": "image", "sha256": sha256_file(image), "dtype": str(ct.array.dtype)},
            "geometry": ct.geometry.to_dict(),
            "hu_range": [lo, hi],
        },
    )
