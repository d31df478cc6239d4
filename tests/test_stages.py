"""The stage record (ctsam/stages.py) and its readers: CLI, cohort bookkeeping, Snakemake rules."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from ctsam import cohort
from ctsam.cli import COMMANDS
from ctsam.stages import CASE, COHORT, STAGES, pipeline_stages, stage

REPO = Path(__file__).resolve().parents[1]


def test_record_is_consistent():
    names = [s.name for s in STAGES]
    assert len(set(names)) == len(names)
    for i, s in enumerate(STAGES):
        assert s.scope in (CASE, COHORT) and s.outputs and s.commands and s.function
        # prerequisites and optional inputs come earlier in pipeline order
        assert set(s.requires) | set(s.uses) <= set(names[:i]), s.name
        assert len(set(s.outputs)) == len(s.outputs)


def test_every_stage_command_is_a_cli_command_with_a_module():
    registered = dict(COMMANDS)
    for s in STAGES:
        for command, module_name in s.commands:
            assert registered[command] == module_name
            module = importlib.import_module(f"ctsam.commands.{module_name}")
            assert callable(module.run) and callable(module.add_arguments) and module.HELP


def test_cohort_tables_are_views_of_the_record():
    assert list(cohort.STAGE_COMMANDS) == [s.name for s in pipeline_stages(CASE)]
    assert list(cohort.COHORT_COMMANDS) == ["report", "radiomics_cohort"]
    assert cohort.STAGE_FILES["fuse"] == "labels.nii.gz" == stage("fuse").done_file
    assert cohort.PREREQUISITES["fuse"] == ("coarse",) and stage("fuse").uses == ("refine",)
    assert cohort.STAGE_SECTIONS["seed"] == ("seed", "structures")
    assert cohort.resolve_stages("auto", cohort.available_commands()) == [s.name for s in pipeline_stages()]


def test_every_stage_has_a_rule_that_takes_outputs_and_resources_from_the_record():
    text = {p.name: p.read_text() for p in (REPO / "rules").glob("*.smk")}
    for s in STAGES:
        rule = "demo_case" if s.name == "demo" else s.name
        found = [body for body in text.values() if re.search(rf"^rule {rule}:", body, re.M)]
        assert len(found) == 1, s.name
        block = re.split(r"^rule ", found[0].split(f"rule {rule}:", 1)[1], flags=re.M)[0]
        # resources straight from the record, or through a per-case helper in common.smk that reads it
        common = text["common.smk"]
        for key, helper in (("threads: ", "threads"), ("mem_mb=", "mem_mb")):
            direct = f'{key}res("{s.name}"' in block
            via = f"{key}{s.name}_{helper}" in block and f'res("{s.name}", ' in common
            assert direct or via, (s.name, key)
        assert f'conda_env("{s.name}"' in block or (f"{s.name}_env" in block and f'conda_env("{s.name}", ' in common), (
            s.name
        )
        if s.name != "demo":  # the demo cohort's files live in the demo folder
            assert f'out("{s.name}"' in block, s.name


def test_resource_variants():
    assert stage("coarse").resources_for("labels").threads == 1
    assert stage("coarse").resources_for("totalsegmentator").conda == "totalsegmentator.yaml"
    assert stage("refine").gpu and not stage("fuse").gpu
