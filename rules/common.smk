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

from ctsam.config import validate_config
from ctsam.errors import ConfigError, CtsamError
from ctsam.preflight import case_backend, drop_missing_auto_labels, is_dry_run, preflight, uses_conda


def _stop(err):
    # a few lines naming the key and the fix, instead of a Python traceback; exit code 2 (config)
    sys.stderr.write(f"ctsam: {err}\n")
    raise SystemExit(2)


# The whole config is validated before any job, also when every result is up to date: unknown keys
# (with the closest valid one), types and ranges, bounds; defaults come from the schema only.
try:
    config.update(validate_config(config, source="the workflow config (config.yaml, --configfile, --config)"))
except CtsamError as err:
    _stop(err)

WF = config["workflow"]
RESULTS = WF["results_dir"]
DEMO = not WF["samples"] and not WF["studies_dir"]
DEMO_DIR = WF["demo"]["dir"]
LESIONS = config["lesions"]
try:
    _samples = load_samples(WF, clicks_column=LESIONS["clicks_column"])
    # the lesion stage is optional: lesions.enabled (auto: the demo cohort, when builtin:demo_lesion is shipped)
    STAGES = active_stages(WF["stages"], available_commands(), LESIONS, demo=DEMO)
except CtsamError as err:
    _stop(err)
_samples = drop_missing_auto_labels(_samples, config["coarse"]["backend"], bool(WF["studies_dir"]) and not WF["samples"])
SAMPLES = {s.case_id: s for s in _samples}
# coarse backend per case (coarse.backend auto: a case with a label map uses it, others TotalSegmentator)
BACKENDS = {c: case_backend(config["coarse"]["backend"], s.coarse_labels) for c, s in SAMPLES.items()}


def _preflight():
    # Submit host only (jobs re-parse this file on their nodes). Problems of one case let the
    # others run (the case fails alone) except in a dry run, which reports everything it can.
    import logging

    dry = is_dry_run(sys.argv)
    result = preflight(config, list(SAMPLES.values()), STAGES, demo=DEMO, use_conda=uses_conda(sys.argv))
    if result.blocking or (dry and result.per_case):
        _stop(result.error(include_cases=dry))
    if result.per_case:
        logging.getLogger("ctsam.preflight").warning("%s", result.warning_text())
    _slurm_preflight()


def _slurm_preflight():
    # SLURM executor (or slurm_* resources): sbatch/sinfo present, no placeholder partition or
    # account, partitions exist, GPU requests valid -- in seconds, before the first submission.
    from ctsam.slurm_preflight import check_slurm, intended_executor, resources_from_settings

    default, per_rule = resources_from_settings(workflow.resource_settings)
    named = any(k.startswith("slurm_") for res in [default, *per_rule.values()] for k in res)
    if intended_executor(sys.argv) == "slurm" or named:
        try:
            check_slurm(default, per_rule)
        except CtsamError as err:
            _stop(err)


def stop_on_sigterm():
    # Called from onstart, after Snakemake's scheduler installed its own SIGTERM handler, which only
    # stops submitting and then waits for running jobs (forever when SLURM never answers). Here
    # SIGTERM stops the run the way Ctrl-C does: no new jobs, running local jobs (their whole process
    # trees) are terminated, submitted SLURM jobs cancelled (the executor's cancel: scancel); the run
    # then ends through onerror (status, failure list). A second SIGTERM exits at once.
    import signal
    import threading

    import psutil
    from snakemake.shell import shell as _shell

    received = []

    def _terminate_local_jobs():
        for proc in list(_shell._processes.values()):
            try:
                tree = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
            except psutil.NoSuchProcess:
                continue
            for p in tree:
                try:
                    p.terminate()
                except psutil.NoSuchProcess:
                    pass

    def _stop():
        scheduler = getattr(workflow, "scheduler", None)
        if scheduler is not None:
            scheduler._user_kill = "graceful"  # submit nothing more
        _terminate_local_jobs()
        if scheduler is not None:
            try:
                if not workflow.local_exec:  # SLURM: scancel every submitted job (local ones were terminated)
                    scheduler._executor.cancel()
            finally:
                scheduler._open_jobs.release()  # wake the scheduler loop

    def _on_sigterm(signum, frame):
        received.append(signum)
        if len(received) > 1:
            _terminate_local_jobs()
            os._exit(128 + signum)
        sys.stderr.write("ctsam: SIGTERM received: cancelling running jobs and stopping (again: exit at once)\n")
        # not in the handler itself: it may interrupt the scheduler while it holds its lock
        threading.Thread(target=_stop, name="ctsam-sigterm", daemon=True).start()

    signal.signal(signal.SIGTERM, _on_sigterm)


if workflow.is_main_process:
    try:
        _preflight()
    except CtsamError as err:
        _stop(err)


# Case ids are safe by construction (ctsam.caseid.safe_case_id: no '/', at most 64 characters, no
# periodic tail that would raise PeriodicWildcardError); the map from input ids is written to
# results/cohort/case_ids.tsv. The constraint keeps a wildcard from spanning folders.
wildcard_constraints:
    case=r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}",


# GPU rules declare resources gpu=1: the local profile caps `gpu` at the machine's GPU count (so two
# GPU jobs never share one GPU); the SLURM profile asks the scheduler for the GPU (--gres).
GPU_RESOURCE = 1




def out(stage, name=None):
    # an output file of a stage (default: its first, the one marking it done), from the stage record
    # in ctsam/stages.py: results/{case}/<file> for per-case stages, results/cohort/<file> for cohort ones
    record = _stage(stage)
    name = name or record.done_file
    if name not in record.outputs:
        raise ValueError(f"{name} is not an output of stage {stage} in ctsam/stages.py: {record.outputs}")
    return f"{RESULTS}/{{case}}/{name}" if record.scope == _CASE else cohort_out(name)


class _PerCase:
    # resources whose variant depends on the case (the coarse backend of coarse.backend auto): each
    # attribute is a function of the job's wildcards, as Snakemake accepts for threads and resources
    def __init__(self, stage, variant_of):
        self.stage, self.variant_of = stage, variant_of

    def __getattr__(self, name):
        return lambda wildcards: getattr(_stage(self.stage).resources_for(self.variant_of(wildcards)), name)


def res(stage, variant=None):
    # a stage's threads / mem_mb / runtime_min / conda environment (ctsam/stages.py); variant: a
    # name, or a function of the wildcards (then every attribute is one too)
    if callable(variant):
        return _PerCase(stage, variant)
    return _stage(stage).resources_for(variant)


def conda_env(stage, variant=None):
    if callable(variant):
        return lambda wildcards: f"../envs/{res(stage, variant(wildcards)).conda}"
    return f"../envs/{res(stage, variant).conda}"


def case_out(name):
    return f"{RESULTS}/{{case}}/{name}"


def cohort_out(name):
    return f"{RESULTS}/cohort/{name}"


def demo_out(name):
    return f"{DEMO_DIR}/{{case}}/{name}"


# planted tumours of a demo case (ctsam.demo.lesions): one click per lesion (ctsam lesions --clicks format;
# the demo samples' lesion_clicks) and the truth map (value = lesion id)
DEMO_LESION_CLICKS = "lesions.tsv"
DEMO_LESION_TRUTH = "lesions_truth.nii.gz"


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


def coarse_backend(wildcards):
    return BACKENDS[wildcards.case]


def _on_labels(wildcards):
    return BACKENDS[wildcards.case] == "labels"


def coarse_labels_arg(wildcards):
    if not _on_labels(wildcards):
        return ""
    return f"--labels {shlex.quote(coarse_labels_path(wildcards))}"


def get_coarse_labels(wildcards):
    if not _on_labels(wildcards):
        return []
    return _declared(coarse_labels_path(wildcards))


def coarse_threads(wildcards):
    # scheduler hints of the case's backend (stage record: TotalSegmentator, or the light labels variant)
    return res("coarse", BACKENDS[wildcards.case]).threads


def coarse_mem_mb(wildcards):
    return res("coarse", BACKENDS[wildcards.case]).mem_mb


def coarse_runtime(wildcards):
    return res("coarse", BACKENDS[wildcards.case]).runtime_min


def coarse_env(wildcards):
    return conda_env("coarse", BACKENDS[wildcards.case])


def coarse_gpu(wildcards):
    # TotalSegmentator on a GPU holds one GPU; the labels backend none (the config is filled from the schema)
    device = config["coarse"]["totalsegmentator"]["device"]
    on_gpu = BACKENDS[wildcards.case] == "totalsegmentator" and str(device).startswith("gpu")
    return GPU_RESOURCE if on_gpu else 0


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
    default = LESIONS["checkpoint"]
    specs = {**({"": default} if default else {}), **LESIONS["checkpoints"]}
    if not specs:
        raise ConfigError("the lesion stage is enabled but no lesion model is set",
                          expected="lesions.checkpoint (a 3DSAM-adapter .pth with lesions.preset, or a converted "
                                   ".safetensors) or lesions.checkpoints per click label",
                          found="lesions.checkpoint: null", fix="set lesions.checkpoint in the config")
    return {label: str(resolve_model_path(spec)) for label, spec in specs.items()}


try:
    LESION_MODEL_FILES = lesion_checkpoints()
except CtsamError as err:
    _stop(err)


def lesion_checkpoint_args(wildcards, input):
    files = LESION_MODEL_FILES
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
    # reviewer clicks for this case, if someone wrote them (see docs/refine.md)
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
    targets.extend(export_targets(cases))
    targets.extend(out(s) for s in STAGES if _stage(s).scope != _CASE)
    return targets


def export_targets(cases):
    # optional DICOM exports (config `export`): DICOM inputs only, once the label map exists
    formats = [f for f, key in (("seg", "dicomseg"), ("rtstruct", "rtstruct")) if config["export"][key]]
    if not formats or "fuse" not in STAGES:
        return []
    return [f"{RESULTS}/{c}/{f}.dcm" for c in cases if SAMPLES[c].is_dicom for f in formats]


def write_case_ids():
    write_case_id_map(RESULTS, list(SAMPLES.values()))


def write_cohort_status(ok=True):
    # status.tsv / failures.tsv, then where to look: results, report, failure list (printed last)
    from ctsam.cohort import run_summary

    write_case_ids()
    statuses = write_status_tables(RESULTS, list(SAMPLES.values()), [s for s in STAGES if s in STAGE_FILES])
    if not ok:
        # after a failed run: the cohort report and tables of the cases that completed
        write_completed_cohort_outputs()
    sys.stderr.write(run_summary(RESULTS, statuses, ok=ok, report="report" in STAGES) + "\n")


def write_completed_cohort_outputs():
    # the cohort report and tables of the cases that completed (ctsam/cohort_outputs.py); the report
    # lists the failed cases from failures.tsv
    from ctsam.cohort_outputs import write_completed_outputs

    write_completed_outputs(
        RESULTS, sorted(SAMPLES), report="report" in STAGES, radiomics="radiomics_cohort" in STAGES
    )
