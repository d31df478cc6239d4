"""The package's import layering, checked on the source (``ast``; nothing is imported).

Layers, lowest first (a module imports only from its own layer unit or from lower layers):

1. **Shared layers**, themselves ordered: ``errors`` < ``resources``, ``provenance``, ``progress``,
   ``caseid`` < ``config``, ``volume``, ``masks``, ``labels`` < ``io/`` < ``model/``. So ``io/`` is a
   lower layer that ``model/`` may use (checkpoints are written atomically through ``io.atomic``);
   no shared module imports a stage or anything above.
2. **Stages**: ``convert/``, ``coarse/``, ``seed/``, ``refine/``, ``lesions/``, ``fuse/``, ``qc/``,
   ``radiomics/``, ``report/``, ``export/``, ``demo/``, ``manifest``. A stage imports shared layers,
   its own modules, and of another stage only the file formats listed in :data:`PUBLIC_CROSS_STAGE`
   (``seed.prompts``: prompts.json; ``refine.refined_file``: refined.npz). Never the CLI, the cohort
   bookkeeping, commands, the API or another stage's internals.
3. **Orchestration**: ``stages`` (the stage record), ``api`` and the package root ``ctsam`` (the
   Python API), ``training/``, ``cohort``. They may import shared layers and stages, never
   ``commands/`` or ``cli``.
4. **Interface**: ``commands/``, ``cli``, ``__main__``.

``from ctsam import __version__`` is allowed everywhere (a constant defined before anything else).
No import circle at all (lazy imports inside functions count too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ctsam"

SHARED_RANK: dict[str, int] = {
    "errors": 0,
    "resources": 1,
    "provenance": 1,
    "progress": 1,
    "caseid": 1,
    "privacy": 1,  # what of the input study may reach outputs: pure functions over JSON-like values
    "config": 2,
    "volume": 2,
    "masks": 2,
    "labels": 2,
    "io": 3,
    "guards": 3,  # input checks on a CT (errors, volume): called by convert and import-ct
    "model": 4,
}
STAGE_UNITS = {
    "convert",
    "coarse",
    "seed",
    "refine",
    "lesions",
    "fuse",
    "qc",
    "radiomics",
    "report",
    "export",
    "demo",
    "manifest",
}
# "" = the package root ctsam/__init__.py; cohort_outputs builds the report and radiomics table of the
# completed cases after a failed run (workflow onerror hook): it calls two stages, like the workflow does
# preflight / slurm_preflight / weights check a planned run (workflow parse time, ctsam weights): they
# read stage modules (TotalSegmentator weight layout, radiomics parameter files)
ORCHESTRATION_UNITS = {
    "stages",
    "api",
    "",
    "training",
    "cohort",
    "cohort_outputs",
    "preflight",
    "slurm_preflight",
    "weights",
}
INTERFACE_UNITS = {"commands", "cli", "__main__"}
#: modules of one stage that other stages may import: the file formats stages hand each other
PUBLIC_CROSS_STAGE = {"ctsam.seed.prompts", "ctsam.refine.refined_file"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """ctsam modules imported anywhere in ``path`` (module level and inside functions)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "ctsam")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "ctsam":
                continue
            if target == "ctsam" and [a.name for a in node.names] == ["__version__"]:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def unit(module: str) -> str:
    """The layer unit of a module: ``ctsam.refine.engine`` -> ``refine``; the root package -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(u: str) -> tuple[int, int]:
    """(layer, rank inside the shared layer) of a unit."""
    if u in SHARED_RANK:
        return 0, SHARED_RANK[u]
    if u in STAGE_UNITS:
        return 1, 0
    if u in ORCHESTRATION_UNITS:
        return 2, 0
    if u in INTERFACE_UNITS:
        return 3, 0
    raise AssertionError(f"ctsam.{u} belongs to no layer: add it to tests/test_layers.py (and say why)")


def violation(src: str, dst: str) -> str | None:
    """Why ``src`` importing ``dst`` breaks the layering, or None when it is allowed."""
    su, du = unit(src), unit(dst)
    if su == du:
        return None
    (sl, sr), (dl, dr) = layer(su), layer(du)
    if dl > sl:
        return "imports a higher layer"
    if sl == dl == 0 and dr >= sr:
        return f"shared layer {su} (rank {sr}) imports {du} (rank {dr}): only lower shared layers"
    if sl == dl == 1 and dst not in PUBLIC_CROSS_STAGE:
        return f"stage {su} reaches into stage {du}'s internals (public: {sorted(PUBLIC_CROSS_STAGE)})"
    return None


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    names = set(modules)
    return {m: imports_of(p, names) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_belongs_to_a_layer():
    for module in all_modules():
        layer(unit(module))


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_imports_follow_the_layer_order():
    bad = [
        f"{src} -> {dst}: {why}"
        for src, targets in sorted(import_graph().items())
        for dst in sorted(targets)
        if (why := violation(src, dst))
    ]
    assert bad == [], "\n".join(bad)


def test_public_cross_stage_modules_exist():
    assert PUBLIC_CROSS_STAGE <= set(all_modules())


# the checker itself: a circle and each kind of upward import are caught
def test_checker_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("ctsam.qc.naming", "ctsam.fuse.fusion"),  # a stage's internals
        ("ctsam.fuse.fusion", "ctsam.qc.metrics"),
        ("ctsam.cohort", "ctsam.cli"),  # orchestration -> interface
        ("ctsam.volume", "ctsam.io.image"),  # shared, lower -> higher
        ("ctsam.io.atomic", "ctsam.model.checkpoint"),
        ("ctsam.labels", "ctsam.fuse.fusion"),  # shared -> stage
        ("ctsam.refine.engine", "ctsam.stages"),  # stage -> orchestration
        ("ctsam.training.loop", "ctsam.commands.train"),
    ],
)
def test_checker_refuses(src, dst):
    assert violation(src, dst) is not None


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("ctsam.fuse.fusion", "ctsam.refine.refined_file"),
        ("ctsam.model.checkpoint", "ctsam.io.atomic"),
        ("ctsam.io.image", "ctsam.volume"),
        ("ctsam.api", "ctsam.refine.engine"),
        ("ctsam.cli", "ctsam.stages"),
        ("ctsam.refine.engine", "ctsam.refine.predictor"),
    ],
)
def test_checker_allows(src, dst):
    assert violation(src, dst) is None
