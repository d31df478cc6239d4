"""Published input conventions of the 3DSAM-adapter checkpoints (med-air/3DSAM-adapter
``dataset/datasets.py``): HU window (clip), then z-score with the dataset's global mean and SD; 1 mm
isotropic; 128^3 crops (``test.py`` / ``train.py`` ``rand_crop_size``)."""

from __future__ import annotations

from dataclasses import dataclass

from ctsam.model.api import InputSpec


@dataclass(frozen=True)
class Preset:
    name: str
    published_name: str  # the --data value of the published scripts
    target: str  # the output class (channel 1)
    hu_window: tuple[float, float]
    mean: float
    sd: float
    spacing_mm: float = 1.0
    patch_size: int = 128

    def input_spec(self, patch_size: int | None = None) -> InputSpec:
        p = int(patch_size or self.patch_size)
        return InputSpec(
            patch_size_zyx=(p, p, p),
            spacing_zyx_mm=(self.spacing_mm,) * 3,
            hu_window=self.hu_window,
            zscore_mean_std=(self.mean, self.sd),
            preset=self.name,
        )


PRESETS: dict[str, Preset] = {
    "kits": Preset("kits", "kits", "kidney_tumor", (-54.0, 247.0), 59.53867, 55.457336),
    "lits": Preset("lits", "lits", "liver_tumor", (-48.0, 163.0), 60.057533, 40.198017),
    "msd_pancreas": Preset("msd_pancreas", "pancreas", "pancreas_tumor", (-39.0, 204.0), 68.45214, 63.422806),
    "msd_colon": Preset("msd_colon", "colon", "colon_cancer", (-57.0, 175.0), 65.175035, 32.651197),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (ValueError naming the known ones otherwise)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}") from None
