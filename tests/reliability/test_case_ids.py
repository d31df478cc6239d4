"""Any input id works: unsafe ids map to safe ids (recorded in case_ids.tsv), periodic ids do not
raise PeriodicWildcardError, non-ASCII ids do not stop the workflow, two inputs never share an id."""

from __future__ import annotations

import csv
import re

import pytest
from snakemake.io import PeriodicityDetector

from ctsam.caseid import SAFE_ID, is_safe_case_id, safe_case_id
from ctsam.cohort import load_samples_tsv, write_case_id_map
from ctsam.errors import ConfigError

HOSTILE = [
    "ab" * 40,  # periodic: Snakemake's PeriodicWildcardError on main
    "x" + "0" * 30,
    "患者一号",  # all non-ASCII: empty after sanitising on main
    "Müller, Hans",
    "../../etc/passwd",
    "a/b",
    " leading space",
    "-dash",
    ".hidden",
    "x" * 200,
    "id\twith\ttabs",
    "emoji-🙂",
    "CON",  # a reserved name on Windows shares, harmless here
    "",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_every_id_maps_to_a_safe_non_periodic_id(raw):
    cid = safe_case_id(raw)
    assert SAFE_ID.fullmatch(cid) and is_safe_case_id(cid)
    assert PeriodicityDetector().is_periodic(cid) is None
    assert "/" not in cid and ".." not in cid and len(cid) <= 64
    assert safe_case_id(raw) == cid  # deterministic


def test_safe_ids_are_kept_and_similar_unsafe_ids_stay_distinct():
    assert safe_case_id("demo-001") == "demo-001" and safe_case_id("P0001.ct_v2") == "P0001.ct_v2"
    variants = ["Müller", "Mäller", "M ller", "M/ller", "M_ller_"]
    ids = [safe_case_id(v) for v in variants]
    assert len(set(ids)) == len(variants)
    assert all(i.startswith("M_ller") for i in ids)


def test_sheet_with_hostile_ids_loads_and_writes_the_map(tmp_path):
    sheet = tmp_path / "samples.tsv"
    rows = [r for r in HOSTILE if r and "\t" not in r] + ["good-1"]
    sheet.write_text("case_id\tpath\n" + "".join(f"{r}\ts{i}\n" for i, r in enumerate(rows)), encoding="utf-8")
    samples = load_samples_tsv(sheet)
    assert len({s.case_id for s in samples}) == len(rows)
    assert samples[-1].case_id == "good-1"
    path = write_case_id_map(str(tmp_path / "results"), samples)
    with path.open(encoding="utf-8", newline="") as fh:
        table = list(csv.DictReader(fh, delimiter="\t"))
    assert [(r["input_id"], r["case_id"]) for r in table] == [(s.input_id, s.case_id) for s in samples]
    assert table[rows.index("ab" * 40)]["input_id"] == "ab" * 40


def test_duplicate_input_ids_and_colliding_ids_are_refused(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\nA\tx\nA\ty\n")
    with pytest.raises(ConfigError, match="duplicate case id"):
        load_samples_tsv(sheet)
    # an input id that is literally another input's mapped id
    mapped = safe_case_id("Müller")
    sheet.write_text(f"case_id\tpath\nMüller\tx\n{mapped}\ty\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="two inputs map to one case id"):
        load_samples_tsv(sheet)


def test_empty_ids_get_distinct_pseudonyms(tmp_path):
    sheet = tmp_path / "samples.tsv"
    sheet.write_text("case_id\tpath\n\tDOE^JOHN\n\tSMITH^JANE\n")
    samples = load_samples_tsv(sheet)
    assert len({s.case_id for s in samples}) == 2
    assert all(re.fullmatch(r"case-[0-9a-f]{10}", s.case_id) for s in samples)
