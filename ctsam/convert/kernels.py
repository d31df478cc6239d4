"""Classifying a CT reconstruction kernel as soft-tissue/standard, medium, sharp (bone/lung/edge) or unknown.

Organ segmentation and radiomics want the soft-tissue (standard) reconstruction of an acquisition,
not the bone or lung one. The class comes from ConvolutionKernel, read with a table of vendor
names (see :func:`classify_kernel`); where the kernel is a bare vendor code whose meaning the table
does not settle (Philips letters, Canon ``FCxx`` outside the known ranges, or anything unknown),
words of the series description decide (``BONE``, ``LUNG``, ``SHARP`` ... / ``STD``, ``SOFT`` ...).
Nothing else is guessed (no contrast phase, no dose).

Tiers (lower ranks first): 0 soft tissue/standard, 1 medium, 2 unknown, 3 sharp.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

SOFT, MEDIUM, UNKNOWN, SHARP = 0, 1, 2, 3
TIER_LABELS = {SOFT: "soft tissue/standard", MEDIUM: "medium", UNKNOWN: "unknown", SHARP: "sharp (bone/lung/edge)"}

#: GE names (whole kernel string).
GE_KERNELS: dict[str, int] = {
    "SOFT": SOFT,
    "STANDARD": SOFT,
    "STND": SOFT,
    "DETAIL": MEDIUM,
    "CHEST": MEDIUM,
    "LUNG": SHARP,
    "BONE": SHARP,
    "BONEPLUS": SHARP,
    "BONE PLUS": SHARP,
    "EDGE": SHARP,
    "ULTRA": SHARP,
}

#: Philips letter codes: A/B (and brain UA-UC, cardiac CA-CC) smooth to standard, C medium,
#: D, E, L and the Y series sharp (bone, lung, high resolution).
PHILIPS_KERNELS: dict[str, int] = {
    **{k: SOFT for k in ("A", "B", "UA", "UB", "UC", "CA", "CB", "CC", "XCA", "XCB")},
    **{k: MEDIUM for k in ("C",)},
    **{k: SHARP for k in ("D", "E", "EB", "EC", "L", "LA", "YA", "YB", "YC", "YD", "YE", "YF")},
}

#: Siemens: a family prefix, a two-digit sharpness and an optional suffix (B30f, I41f, Br40d,
#: Qr44, Hr38h, Bv36, Bl57). Sharpness <= 40 soft, 41..49 medium, >= 50 sharp; lung (Bl) always sharp.
_SIEMENS = re.compile(r"^([A-Z][a-z]{0,2})(\d{2})([a-z]?)(?:\\.*)?$")
_SIEMENS_FAMILIES = (
    "B",
    "I",
    "H",
    "D",
    "T",
    "U",
    "C",
    "S",
    "J",
    "Q",
    "V",
    "Br",
    "Bf",
    "Bv",
    "Bl",
    "Hr",
    "Hc",
    "Qr",
    "Qs",
    "Sa",
    "Hf",
)
#: Canon/Toshiba FCxx: 01-29 body and head soft tissue, 30-39 bone, 50-59 lung; others unknown.
_CANON = re.compile(r"^FC(\d{2})$")

_SHARP_WORDS = ("BONE", "LUNG", "SHARP", "EDGE", "KNOCHEN", "LUNGE", "HIRES", "HR", "OSTEO")
_SOFT_WORDS = ("STD", "STANDARD", "SOFT", "WEICHTEIL", "ABD", "MEDIASTINUM", "MEDIASTINAL")


@dataclass(frozen=True)
class KernelClass:
    """A kernel's tier and how it was judged (for the sidecar)."""

    tier: int
    kernel: str | None
    source: str

    @property
    def label(self) -> str:
        return TIER_LABELS[self.tier]


def kernel_name(value: Any) -> str | None:
    """The kernel as one string: the first value of a multi-valued ConvolutionKernel (Siemens ['Br40d', '3'])."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    text = str(value).strip() if value is not None else ""
    return text or None


def classify_kernel(kernel: Any, description: str | None = None) -> KernelClass:
    """Tier of a reconstruction from its ConvolutionKernel and (for bare codes) its series description."""
    name = kernel_name(kernel)
    words = _words(description)
    by_words = _from_words(words)
    if name is None:
        if by_words is not None:
            return KernelClass(by_words[0], None, f"no ConvolutionKernel; series description word {by_words[1]!r}")
        return KernelClass(UNKNOWN, None, "no ConvolutionKernel and no kernel word in the series description")
    upper = name.upper()
    if upper in GE_KERNELS:
        return KernelClass(GE_KERNELS[upper], name, f"kernel {name!r} (GE name)")
    match = _SIEMENS.match(name)
    if match and match.group(1) in _SIEMENS_FAMILIES:
        family, sharpness = match.group(1), int(match.group(2))
        if family == "Bl":
            tier = SHARP
        else:
            tier = SOFT if sharpness <= 40 else MEDIUM if sharpness < 50 else SHARP
        return KernelClass(tier, name, f"kernel {name!r} (Siemens family {family}, sharpness {sharpness})")
    match = _CANON.match(upper)
    if match:
        number = int(match.group(1))
        tier = SOFT if 1 <= number <= 29 else SHARP if 30 <= number <= 39 or 50 <= number <= 59 else UNKNOWN
        if by_words is not None and tier == UNKNOWN:
            return KernelClass(
                by_words[0], name, f"kernel {name!r} (Canon code) and series description word {by_words[1]!r}"
            )
        return KernelClass(tier, name, f"kernel {name!r} (Canon FC{number:02d})")
    if upper in PHILIPS_KERNELS:
        # bare letter codes: a description word, when present, says what the site meant
        if by_words is not None:
            return KernelClass(
                by_words[0], name, f"kernel {name!r} (Philips code) and series description word {by_words[1]!r}"
            )
        return KernelClass(PHILIPS_KERNELS[upper], name, f"kernel {name!r} (Philips code)")
    kernel_words = _from_words(_words(name))
    if kernel_words is not None:
        return KernelClass(kernel_words[0], name, f"kernel {name!r} (word {kernel_words[1]!r})")
    if by_words is not None:
        return KernelClass(
            by_words[0], name, f"kernel {name!r} (not in the table) and series description word {by_words[1]!r}"
        )
    return KernelClass(UNKNOWN, name, f"kernel {name!r} is not in the vendor table")


def _words(text: str | None) -> list[str]:
    return [w for w in re.split(r"[^A-Z0-9]+", (text or "").upper()) if w]


def _from_words(words: list[str]) -> tuple[int, str] | None:
    """Sharp words win over soft ones ("LUNG STD" is a lung reconstruction)."""
    for w in words:
        if w in _SHARP_WORDS:
            return SHARP, w
    for w in words:
        if w in _SOFT_WORDS:
            return SOFT, w
    return None


def preference_index(kernel: Any, prefer: tuple[str, ...]) -> int:
    """Position of the kernel in ``convert.prefer_kernels`` (case-insensitive), or ``len(prefer)``."""
    name = (kernel_name(kernel) or "").upper()
    for i, wanted in enumerate(prefer):
        if name and name == wanted.strip().upper():
            return i
    return len(prefer)
