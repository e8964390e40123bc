"""The public API and the layout: every exported name resolves, light modules stay torch-free, and imports
only run down the pipeline (a package never imports one that comes after it)."""
from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "topformer_deploy"
PUBLIC = ["topformer_deploy", "topformer_deploy.model", "topformer_deploy.export", "topformer_deploy.bench",
          "topformer_deploy.breakdown", "topformer_deploy.gate", "topformer_deploy.eval", "topformer_deploy.report",
          "topformer_deploy.postprocess"]
#: The pipeline, top to bottom: a module may import its own layer and the layers above it, never below.
LAYERS = [
    {"errors", "files", "lazy", "stats"},
    {"artifact", "images", "data"},
    {"model"},
    {"export"},
    {"bench", "eval", "postprocess"},
    {"breakdown", "gate"},
    {"report"},
    {"cli", "testing", "__init__", "__main__"},
]
TORCH_FREE = ["topformer_deploy", "topformer_deploy.artifact", "topformer_deploy.model.stages",
              "topformer_deploy.postprocess",
              "topformer_deploy.bench.harness", "topformer_deploy.bench.conditions", "topformer_deploy.bench.readiness",
              "topformer_deploy.gate.compare",
              "topformer_deploy.report.gate", "topformer_deploy.report.bench", "topformer_deploy.cli"]


@pytest.mark.parametrize("package", PUBLIC)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
    with pytest.raises(AttributeError):
        getattr(module, "no_such_name")


def test_light_modules_import_no_torch():
    code = ("import importlib, sys\n"
            f"for name in {TORCH_FREE!r}:\n"
            "    importlib.import_module(name)\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def _layer(part: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if part in names)


def _imports(path: Path) -> list[str]:
    """The top-level topformer_deploy parts ``path`` imports (relative imports resolved)."""
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(relative[:-1])[: len(relative) - node.level] if node.level > 1 else list(relative[:-1])
            target = base + (node.module.split(".") if node.module else [])
            if not target:  # "from .. import x": the names imported are the parts
                found += [alias.name for alias in node.names]
            else:
                found.append(target[0])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("topformer_deploy."):
            found.append(node.module.split(".")[1])
    return found


def test_imports_run_down_the_pipeline():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for target in _imports(path):
            if target in ("__version__",) or target == part:
                continue
            if _layer(target) > _layer(part):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {target}")
    assert wrong == []
