"""Structures painted into the demo phantom, with their TotalSegmentator v2 ``total`` ids and names.

The ids are those of TotalSegmentator's ``class_map["total"]`` (see
../shared/docs/totalsegmentator.md), so a phantom's label maps look like TotalSegmentator output.
"""

from __future__ import annotations

# TotalSegmentator v2 "total" ids of the structures the phantom contains.
ORGANS: dict[str, int] = {
    "spleen": 1,
    "kidney_right": 2,
    "kidney_left": 3,
    "gallbladder": 4,
    "liver": 5,
    "stomach": 6,
    "lung_upper_lobe_left": 10,
    "lung_lower_lobe_left": 11,
    "lung_upper_lobe_right": 12,
    "lung_middle_lobe_right": 13,
    "lung_lower_lobe_right": 14,
    "esophagus": 15,
    "trachea": 16,
    "urinary_bladder": 21,
    "heart": 51,
    "aorta": 52,
    "sternum": 116,
}

# vertebrae from caudal to cranial: L5 (27) ... L1 (31), T12 (32) ... T1 (43), C7 (44)
VERTEBRAE: list[tuple[str, int]] = (
    [(f"vertebrae_L{n}", 32 - n) for n in range(5, 0, -1)]
    + [(f"vertebrae_T{n}", 44 - n) for n in range(12, 0, -1)]
    + [("vertebrae_C7", 44)]
)

# ribs 1..12 per side: rib_left_N = 91 + N, rib_right_N = 103 + N
RIBS: list[tuple[str, int]] = [(f"rib_left_{n}", 91 + n) for n in range(1, 13)] + [
    (f"rib_right_{n}", 103 + n) for n in range(1, 13)
]


def label_table() -> dict[int, str]:
    """``{TotalSegmentator id: name}`` of every structure a phantom can contain, sorted by id."""
    table = {i: n for n, i in ORGANS.items()}
    table.update({i: n for n, i in VERTEBRAE})
    table.update({i: n for n, i in RIBS})
    return dict(sorted(table.items()))
