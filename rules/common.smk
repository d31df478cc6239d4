# Sample sheet, enabled stages and input functions. Logic lives in ctsam/cohort.py (unit-tested).
import os
import shlex
import sys
from pathlib import Path

# The workflow runs the ctsam code of its own checkout, at parse time and in every job (also in
# conda environments, which hold only third-party packages): rules call `python -m ctsam`.
REPO = str(Path(workflow.basedir).parent)
sys.path.insert(0, REPO)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH", "")])))

from ctsam.cohort import (
    STAGE_FILES,
    active_stages,
    available_commands,
    benchmark_file,
    case_file,
    lesion_clicks_for,
    load_samples,
    log_file,
    write_case_id_map,
    write_stage_config,
    write_status_tables,
)
from ctsam.stages import CASE as _CASE
from ctsam.stages import stage as _stage

WF = config["workflow"]
RESULTS = WF["results_dir"]
DEMO = not WF["samples"] and not WF["studies_dir"]
DEMO_DIR = WF["demo"]["dir"]
LESIONS = config["lesions"]
SAMPLES = {s.case_id: s for s in load_samples(WF, clicks_column=LESIONS["clicks_column"])}
# the lesion stage is optional: lesions.enabled (auto: the demo cohort, when builtin:demo_lesion is shipped)
STAGES = active_stages(WF["stages"], available_commands(), LESIONS, demo=DEMO)


# Case ids are safe by construction (ctsam.caseid.safe_case_id: no '/', at most 64 characters, no
# periodic tail that would raise PeriodicWildcardError); the map from input ids is written to
# results/cohort/case_ids.tsv. The constraint keeps a wildcard from spanning folders.
wildcard_constraints:
    case=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",


# GPU rules declare resources gpu=1: the local profile caps `gpu` at the machine's GPU count (so two
# GPU jobs never share one GPU); the SLURM profile asks the scheduler for the GPU (--gres).
GPU_RESOURCE = 1


def coarse_uses_gpu():
    ts = config.get("coarse", {}).get("totalsegmentator", {})
    return WF["coarse_backend"] == "totalsegmentator" and str(ts.get("device", "gpu")).startswith("gpu")


def out(stage, name=None):
    # an output file of a stage (default: its first, the one marking it done), from the stage record
    # in ctsam/stages.py: results/{case}/<file> for per-case stages, results/cohort/<file> for cohort ones
    record = _stage(stage)
    name = name or record.done_file
    if name not in record.outputs:
        raise ValueError(f"{name} is not an output of stage {stage} in ctsam/stages.py: {record.outputs}")
    return f"{RESULTS}/{{case}}/{name}" if record.scope == _CASE else cohort_out(name)


def res(stage, variant=None):
    # a stage's threads / mem_mb / runtime_min / conda environment (ctsam/stages.py)
    return _stage(stage).resources_for(variant)


def conda_env(stage, variant=None):
    return f"../envs/{res(stage, variant).conda}"


def case_out(name):
    return f"{RESULTS}/{{case}}/{name}"


def cohort_out(name):
    return f"{RESULTS}/cohort/{name}"


def demo_out(name):
    return f"{DEMO_DIR}/{{case}}/{name}"


# planted tumours of a demo case (ctsam.demo.lesions): one click per lesion (ctsam lesions --clicks format)
# and the truth map (value = lesion id); the lesion stage of demo runs uses demo_lesion_clicks() with
# WF["demo"]["lesion_checkpoint"] (builtin:demo_lesion)
DEMO_LESION_CLICKS = "lesions.tsv"
DEMO_LESION_TRUTH = "lesions_truth.nii.gz"


def demo_lesion_clicks():
    return demo_out(DEMO_LESION_CLICKS)


def demo_dir_of(wildcards, output):
    # the demo cohort folder, derived from this case's output (demo/<case>/phantom.json)
    return str(Path(output.meta).parent.parent)


def log_path(stage):
    return log_file(RESULTS, stage)


def bench_path(stage):
    return benchmark_file(RESULTS, stage)


def _declared(path):
    # Declare a user input only if it exists: a missing study then fails its own case (the stage
    # command reports it) instead of stopping the DAG for the whole cohort. Demo inputs are produced.
    return path if DEMO or (path and Path(path).exists()) else []


def study_path(wildcards):
    return SAMPLES[wildcards.case].path


def get_study(wildcards):
    return _declared(study_path(wildcards))


def convert_command(wildcards):
    return "convert" if SAMPLES[wildcards.case].is_dicom else "import-ct"


def coarse_labels_path(wildcards):
    return SAMPLES[wildcards.case].coarse_labels or ""


def coarse_labels_arg(wildcards):
    if WF["coarse_backend"] != "labels":
        return ""
    return f"--labels {shlex.quote(coarse_labels_path(wildcards))}"


def get_coarse_labels(wildcards):
    if WF["coarse_backend"] != "labels":
        return []
    return _declared(coarse_labels_path(wildcards))


def stage_config(stage):
    # the config sections a stage reads, as a content-addressed file passed with --config; as a
    # param, a change of these settings re-runs that stage (rerun trigger 'params') and no other
    return write_stage_config(config, stage, Path(".snakemake") / "ctsam")


def results_of(wildcards, output):
    # the results folder, derived from a cohort output (results/cohort/<file>)
    return str(Path(output[0]).parent.parent)


def refine_checkpoint():
    # the model file itself is an input: new weights re-run refine and everything after it
    from ctsam.resources import resolve_model_path

    return str(resolve_model_path(config["refine"]["checkpoint"]))


def lesion_checkpoints():
    # {"": default model file, label: its model file}: the model files are inputs (new weights re-run lesions)
    from ctsam.resources import resolve_model_path

    if "lesions" not in STAGES:
        return {}
    specs = {"": LESIONS["checkpoint"], **LESIONS["checkpoints"]}
    return {label: str(resolve_model_path(spec)) for label, spec in specs.items()}


def lesion_checkpoint_args(wildcards, input):
    files = lesion_checkpoints()
    return " ".join(f"--checkpoint {shlex.quote(f'{label}={path}' if label else path)}"
                    for label, path in sorted(files.items()))


def get_lesion_clicks(wildcards):
    # the case's CLICKS.tsv (sample sheet column, demo table, or lesions.clicks_dir/<case>.tsv), if any
    clicks = lesion_clicks_for(SAMPLES[wildcards.case], LESIONS["clicks_dir"])
    return _declared(clicks) if clicks else []


def lesion_clicks_arg(wildcards, input):
    return f"--clicks {shlex.quote(input.clicks)}" if input.clicks else "--no-clicks"


def get_lesion_labels(wildcards):
    # each lesion's containing structure is named from the case's coarse labels (prep job output)
    return out("coarse") if LESIONS["containing_labels"] == "coarse" else []


def lesion_labels_arg(wildcards, input):
    return f"--labels {shlex.quote(input.labels)}" if input.labels else ""


def get_lesions(wildcards):
    # qc and radiomics take the lesion map when the lesion stage runs
    return case_file(RESULTS, "lesions", wildcards.case) if "lesions" in STAGES else []


def lesions_arg(wildcards, input):
    return f"--lesions {shlex.quote(input.lesions)}" if input.lesions else ""


def get_corrections(wildcards):
    # reviewer clicks for this case, if someone wrote them (see README 'seed and refine')
    path = Path(WF["corrections_dir"]) / f"{wildcards.case}.json"
    return [str(path)] if path.exists() else []


def corrections_arg(wildcards, input):
    return f"--extra-clicks {shlex.quote(input.corrections)}" if input.corrections else ""


def kept_case_stages():
    # enabled per-case stages whose outputs stay (not seed's temporary prompts)
    return [s for s in STAGES if s in STAGE_FILES and not _stage(s).temporary]


def manifest_inputs(wildcards):
    return [case_file(RESULTS, s, wildcards.case) for s in kept_case_stages()]


def _paths(item):
    # a named input holds one path (a str) or several (a list)
    return [item] if isinstance(item, str) else list(item)


def manifest_args(wildcards, input):
    args = [f"--output-file {shlex.quote(p)}" for p in _paths(input.outputs)]
    args += [f"--input {shlex.quote(p)}" for p in _paths(input.study)]
    args += [f"--checkpoint {shlex.quote(p)}" for p in _paths(input.checkpoint)]
    return " ".join(args)


def get_refined(wildcards):
    # fuse and qc use the refined probabilities when the refine stage runs, else coarse masks only
    return case_file(RESULTS, "refine", wildcards.case) if "refine" in STAGES else []


def refined_arg(wildcards):
    refined = get_refined(wildcards)
    return f"--refined {refined}" if refined else ""


def final_targets():
    cases = sorted(SAMPLES)
    targets = []
    if DEMO:
        targets.extend(expand(demo_out("dicom"), case=cases))
    targets.extend(case_file(RESULTS, s, c) for s in kept_case_stages() for c in cases)
    targets.extend(expand(out("manifest"), case=cases))
    targets.extend(out(s) for s in STAGES if _stage(s).scope != _CASE)
    return targets


def write_case_ids():
    write_case_id_map(RESULTS, list(SAMPLES.values()))


def write_cohort_status():
    write_case_ids()
    write_status_tables(RESULTS, list(SAMPLES.values()), [s for s in STAGES if s in STAGE_FILES])
