"""The hexagon's arrows point inward: import-linter contracts (``pyproject.toml``) checked by ``lint-imports``.

cli → gui → container → services → ports / config / core; adapters and storage never import use cases,
the container or an entry point; the core imports no adapter, store, entry point or I/O library. The
contracts must hold here and must FAIL on a deliberately wrong import in a copy of the tree; the core
must load no outer layer at run time, and no module opens a side door with ``importlib``.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("locdiff", "adapters", "storage", "gui")
OUTER = ("adapters", "storage", "gui", "open_clip", "sqlalchemy", "PySide6", "pyqtgraph", "OpenGL", "geoclip", "safetensors", "PIL",
         "sentence_transformers", "transformers", "matplotlib")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports")
    assert exe, "import-linter is a test dependency (pyproject.toml [test])"
    env = {"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin", "PYTHONPATH": str(cwd), "HOME": str(cwd)}
    return subprocess.run([exe, "--config", str(cwd / "pyproject.toml"), "--no-cache"], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_lint_imports_keeps_every_contract():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout and "5 kept" in out.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """The four packages and the contracts, copied so a test can plant a wrong import."""
    root = tmp_path_factory.mktemp("hexagon")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.csv", "*.png", "*.jpg"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize("module, line, broken", [
    ("locdiff/core/geo.py", "import adapters.compute", "locdiff.core.geo -> adapters.compute"),
    ("locdiff/core/metrics.py", "import sqlalchemy", "locdiff.core.metrics -> sqlalchemy"),
    ("locdiff/services/evaluation.py", "from storage import sql_store", "locdiff.services.evaluation -> storage"),
    ("adapters/report.py", "from locdiff.services import studies", "adapters.report -> locdiff.services"),
    ("gui/app.py", "from locdiff.cli import main", "gui.app -> locdiff.cli"),
    ("locdiff/cli/main.py", "import adapters.photos", "locdiff.cli.main -> adapters.photos"),
])
def test_lint_imports_fails_on_a_wrong_import(tree_copy, module, line, broken):
    path = tree_copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # planted by the architecture test\n")
        out = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout[-3000:]
    assert broken in " ".join(out.stdout.split()), out.stdout[-3000:]


def test_importing_the_core_and_use_cases_loads_no_outer_layer():
    """At run time too (imports inside functions excepted): the core, ports, config and use cases load no adapter."""
    inner = [ROOT / "locdiff" / "core", ROOT / "locdiff" / "services"]
    modules = ["locdiff.ports", "locdiff.config"] + [
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for d in inner for p in d.rglob("*.py")
    ]
    assert len(modules) >= 20  # really saw the core and the use cases
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {OUTER!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def _side_doors(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__", "spec_from_file_location", "load_module"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} calls {name}")
    return found


def test_no_importlib_side_doors():
    """Imports import-linter cannot see (``importlib.import_module("…")``) are not used to dodge the contracts."""
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 40
    offences = [o for p in files for o in _side_doors(p)]
    assert not offences, "\n".join(offences)
