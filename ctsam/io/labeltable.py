"""Label tables: ``{index: name}`` as a TSV sidecar and as TotalSegmentator-style NIfTI XML.

TotalSegmentator (``nifti_ext_header``) stores the label table of a multilabel NIfTI in a header
extension with code 0 holding Caret-Workbench XML::

    <CaretExtension> ... <VolumeInformation Index="0"><LabelTable>
      <Label Key="1" Red=".." Green=".." Blue=".." Alpha="1"><![CDATA[spleen]]></Label> ...

3D Slicer and TotalSegmentator's own reader understand it. ctsam writes the same form.
"""

from __future__ import annotations

import colorsys
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from ctsam.errors import InputDataError
from ctsam.io.atomic import atomic_write_text


def label_color_rgb(index: int) -> tuple[int, int, int]:
    """A stable, well-separated colour per label index (golden-angle hue walk)."""
    hue = (index * 0.618033988749895) % 1.0
    sat = 0.55 + 0.35 * ((index * 7) % 3) / 2
    val = 0.95 - 0.25 * ((index * 5) % 2)
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(r * 255), int(g * 255), int(b * 255)


def labels_to_xml(labels: dict[int, str]) -> str:
    body = []
    for index in sorted(labels):
        r, g, b = label_color_rgb(index)
        name = labels[index].replace("]]>", "]]]]><![CDATA[>")
        body.append(
            f'<Label Key="{index}" Red="{r / 255:.4f}" Green="{g / 255:.4f}" Blue="{b / 255:.4f}" '
            f'Alpha="1"><![CDATA[{name}]]></Label>'
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<CaretExtension>\n<VolumeInformation Index="0">\n<LabelTable>\n'
        + "\n".join(body)
        + "\n</LabelTable>\n<VolumeType><![CDATA[Label]]></VolumeType>\n</VolumeInformation>\n</CaretExtension>\n"
    )


def labels_from_xml(text: str | bytes) -> dict[int, str]:
    """Parse a Caret label-table XML (as written by TotalSegmentator or ctsam)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip().rstrip("\x00").strip()
    root = ET.fromstring(text)
    out: dict[int, str] = {}
    for label in root.iter("Label"):
        out[int(label.attrib["Key"])] = (label.text or "").strip()
    return out


def write_label_tsv(path: str | os.PathLike[str], labels: dict[int, str]) -> None:
    """Write ``index<TAB>name`` lines (with a header) atomically."""
    lines = ["index\tname"] + [f"{i}\t{labels[i]}" for i in sorted(labels)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_label_tsv(path: str | os.PathLike[str]) -> dict[int, str]:
    """Read a two-column table ``index name`` (tab or whitespace separated, optional header)."""
    path = Path(path)
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("\t") if "\t" in line else line.split(None, 1)
        if len(parts) < 2:
            raise InputDataError(
                "label table line has fewer than two columns",
                path=path,
                expected="'index<TAB>name' per line",
                found=f"line {n}: {line!r}",
                fix="write one 'index name' pair per line",
            )
        if n == 1 and not parts[0].strip().lstrip("-").isdigit():
            continue  # header
        try:
            out[int(parts[0])] = parts[1].strip()
        except ValueError as err:
            raise InputDataError(
                "label table index is not an integer",
                path=path,
                expected="an integer label index in column 1",
                found=f"line {n}: {line!r}",
                fix="fix the table so every line starts with an integer",
            ) from err
    return out


def sidecar_tsv_path(image_path: str | os.PathLike[str]) -> Path:
    """``labels.nii.gz`` -> ``labels.tsv`` (the label-table sidecar beside a label map)."""
    p = Path(image_path)
    name = p.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return p.with_name(name + ".tsv")
