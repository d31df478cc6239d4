"""Per-case manifest: hashes, benchmark parsing, sidecar timings, determinism, CLI."""

from __future__ import annotations

import hashlib
import json

import pytest

from ctsam.errors import InputDataError
from ctsam.manifest import build_manifest, read_benchmark, sha256_dir

BENCH = (
    "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    "12.5\t0:00:12\t812.3\t900.1\t700.0\t750.0\t1.0\t2.0\t95.0\t11.9\n"
    "13.5\t0:00:13\t820.0\t900.1\t700.0\t750.0\t1.0\t2.0\t95.0\t12.1\n"
)


def make_case(tmp_path):
    case = tmp_path / "results" / "c001"
    (case / "benchmarks").mkdir(parents=True)
    (case / "labels.nii.gz").write_bytes(b"labels")
    (case / "qc.json").write_text(json.dumps({"structures": []}))
    (case / "fuse.json").write_text(json.dumps({"timing_s": {"total": 1.25}}))
    (case / "benchmarks" / "fuse.tsv").write_text(BENCH)
    dicom = tmp_path / "dicom" / "series"
    dicom.mkdir(parents=True)
    (dicom / "a.dcm").write_bytes(b"A")
    (dicom / "b.dcm").write_bytes(b"BB")
    ckpt = tmp_path / "model.safetensors"
    ckpt.write_bytes(b"weights")
    return case, dicom, ckpt


def test_read_benchmark_means_rows(tmp_path):
    p = tmp_path / "b.tsv"
    p.write_text(BENCH)
    assert read_benchmark(p) == {"wall_s": 13.0, "max_rss_mb": 816.15, "cpu_s": 12.0, "repeats": 2}
    p.write_text("nothing here\n")
    with pytest.raises(InputDataError, match="no timing rows"):
        read_benchmark(p)


def test_dir_digest_depends_on_names_and_contents(tmp_path):
    _, dicom, _ = make_case(tmp_path)
    d1, n, size = sha256_dir(dicom)
    assert (n, size) == (2, 3)
    (dicom / "b.dcm").rename(dicom / "c.dcm")
    assert sha256_dir(dicom)[0] != d1


def test_build_manifest(tmp_path):
    case, dicom, ckpt = make_case(tmp_path)
    m = build_manifest(
        case="c001",
        inputs=[dicom],
        outputs=[case / "labels.nii.gz", case / "qc.json"],
        checkpoints=[ckpt],
        benchmarks=[case / "benchmarks" / "fuse.tsv"],
        sidecars=[case / "fuse.json", case / "qc.json"],
        config={"fuse": {"threshold": 0.5}},
        case_dir=case,
    )
    # inputs are named pseudonymously (a study folder's name may be a patient's name)
    assert m["inputs"] == [{"name": "input-1", "sha256": sha256_dir(dicom)[0], "bytes": 3, "files": 2}]
    assert m["outputs"][0] == {"name": "labels.nii.gz", "sha256": hashlib.sha256(b"labels").hexdigest(), "bytes": 6}
    assert m["checkpoints"][0]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert m["stages"]["fuse"] == {
        "benchmark": {"wall_s": 13.0, "max_rss_mb": 816.15, "cpu_s": 12.0, "repeats": 2},
        "sidecar_timing_s": {"total": 1.25},
    }
    assert "qc" not in m["stages"]  # qc.json has no timing fields
    assert len(m["config_digest"]) == 64 and m["software"]["numpy"]
    assert str(tmp_path) not in json.dumps(m)  # no absolute paths (they may carry names)
    kept = build_manifest(case="c001", inputs=[dicom], config={"privacy": {"keep_input_names": True}})
    assert kept["inputs"][0]["name"] == "series"
    with pytest.raises(InputDataError, match="does not exist"):
        build_manifest(case="c001", inputs=[tmp_path / "missing"])


def test_cli_manifest_scan_and_explicit_lists_deterministic(tmp_path):
    from ctsam.cli import main

    case, dicom, ckpt = make_case(tmp_path)
    out = case / "manifest.json"
    argv = [
        "manifest",
        "--case",
        "c001",
        str(case),
        "--scan",
        "--input",
        str(dicom),
        "--checkpoint",
        str(ckpt),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    first = out.read_bytes()
    assert main(argv) == 0  # the manifest itself is excluded from the scan
    assert out.read_bytes() == first
    m = json.loads(first)
    assert m["case"] == "c001"
    assert [o["name"] for o in m["outputs"]] == ["fuse.json", "labels.nii.gz", "qc.json"]
    assert m["stages"]["fuse"]["benchmark"]["repeats"] == 2
    out2 = tmp_path / "m2.json"
    assert (
        main(
            [
                "manifest",
                "--output-file",
                str(case / "qc.json"),
                "--benchmark",
                str(case / "benchmarks" / "fuse.tsv"),
                "-o",
                str(out2),
            ]
        )
        == 0
    )
    m2 = json.loads(out2.read_text())
    assert [o["name"] for o in m2["outputs"]] == ["qc.json"] and list(m2["stages"]) == ["fuse"]
    assert main(["manifest", "--scan", "-o", str(out2)]) == 2


def test_cli_benchmarks_dir_gives_stage_timings(tmp_path):
    """The workflow passes --benchmarks-dir RESULTS/CASE/benchmarks: every stage's timings land in 'stages'."""
    from ctsam.cli import main

    case, _, _ = make_case(tmp_path)
    (case / "benchmarks" / "convert.tsv").write_text(BENCH)
    out = tmp_path / "m.json"
    argv = [
        "manifest",
        str(case),
        "--output-file",
        str(case / "qc.json"),
        "--benchmarks-dir",
        str(case / "benchmarks"),
        "-o",
        str(out),
    ]
    assert main(argv) == 0
    stages = json.loads(out.read_text())["stages"]
    assert sorted(stages) == ["convert", "fuse"]
    assert stages["convert"]["benchmark"]["wall_s"] == 13.0 and stages["convert"]["benchmark"]["max_rss_mb"] == 816.15
    assert main(["manifest", str(case), "--benchmarks-dir", str(tmp_path / "none"), "-o", str(out)]) == 0
    assert json.loads(out.read_text())["stages"] == {}
