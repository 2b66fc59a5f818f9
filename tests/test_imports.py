"""Imports run one way: no circle among probe_core's modules, and evaluation loads neither
torch nor plotly (data flows downhill: embeddings -> probe -> evaluation -> figures)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from probe_core.module_graph import cycles, dependencies, import_graph, module_files

REPO = Path(__file__).resolve().parent.parent


def test_probe_core_has_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and "probe_core.evaluation.protocols" in graph
    assert cycles() == [], "\n".join(" -> ".join(circle) for circle in cycles())


def test_the_probe_imports_neither_evaluation_nor_encoders():
    """The circle probe -> evaluation.protocols -> evaluation.splits -> probe is gone:
    ``ProbeWeights`` is built from the fitted estimator, ``pick_device`` lives in devices."""
    needed = dependencies(["probe_core.probe"])
    assert not [m for m in needed if m.startswith(("probe_core.evaluation", "probe_core.encoders"))]
    assert "probe_core.evaluation.splits" in dependencies(["probe_core.evaluation.protocols"])


def test_a_circle_is_found_where_there_is_one(tmp_path):
    """The check above can fail: a package whose modules import each other is reported."""
    package = tmp_path / "probe_core"
    (package / "evaluation").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "evaluation" / "__init__.py").write_text("")
    (package / "probe.py").write_text("def fit():\n    from .evaluation import splits\n")
    (package / "evaluation" / "splits.py").write_text("from ..probe import fit\n")
    (package / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import probe\n"
    )
    graph = import_graph(package)
    assert sorted(module_files(package)) == [
        "probe_core",
        "probe_core.evaluation",
        "probe_core.evaluation.splits",
        "probe_core.probe",
        "probe_core.typed",
    ]
    assert graph["probe_core.typed"] == frozenset()  # never run: no dependency
    assert cycles(graph) == [
        ["probe_core.evaluation.splits", "probe_core.probe", "probe_core.evaluation.splits"]
    ]


def loaded_after(statement: str) -> list[str]:
    """The heavy libraries a fresh interpreter has loaded after ``statement``."""
    heavy = "[m for m in ('plotly', 'torch') if m in sys.modules]"
    code = f"import json, sys; {statement}; print(json.dumps({heavy}))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(result.stdout)


def test_importing_every_evaluation_module_loads_neither_torch_nor_plotly():
    modules = sorted(m for m in module_files() if m.startswith("probe_core.evaluation"))
    assert "probe_core.evaluation.zeroshot" in modules and len(modules) >= 10
    assert loaded_after(f"import {', '.join(modules)}") == []
    assert loaded_after("import probe_core.evaluation, probe_core.embeddings") == []


def test_no_module_imports_another_modules_private_names():
    """What one module shares with another is public; a leading underscore stays at home."""
    private = []
    for module, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            relative = isinstance(node, ast.ImportFrom) and (
                node.level > 0 or (node.module or "").startswith("probe_core")
            )
            if relative:
                private += [
                    f"{module}: {alias.name} from {'.' * node.level}{node.module or ''}"
                    for alias in node.names
                    if alias.name.startswith("_") and not alias.name.startswith("__")
                ]
    assert private == []
