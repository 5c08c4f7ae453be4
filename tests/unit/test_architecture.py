"""The hexagon's arrows point inward: the locdiff core imports no adapter, storage, GUI or heavy I/O library.

Only the composition root (``locdiff/container.py``) and the entry points (``locdiff/cli/main.py``,
``locdiff/cli/studies.py``, ``locdiff/__main__.py``) may name concrete adapters. Checked twice: statically over every import
statement (also those inside functions) and dynamically in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "locdiff"
COMPOSITION = {"container.py", "cli/__init__.py", "cli/__main__.py", "cli/main.py", "cli/studies.py", "__main__.py"}
FORBIDDEN = ("adapters", "storage", "gui", "open_clip", "sqlalchemy", "PySide6", "pyqtgraph", "OpenGL", "geoclip",
             "safetensors", "PIL", "sentence_transformers", "transformers")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def core_files() -> list[Path]:
    return [p for p in CORE.rglob("*.py") if p.relative_to(CORE).as_posix() not in COMPOSITION]


def test_core_has_no_forbidden_imports():
    offences = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in core_files()
        for line, name in _imports(path)
        if name.split(".")[0] in FORBIDDEN
    ]
    assert not offences, "core → outer-layer imports:\n" + "\n".join(offences)
    assert len(core_files()) >= 8  # the scan really saw the core


def test_importing_the_core_loads_no_outer_layer():
    modules = [f"locdiff.{p.relative_to(CORE).with_suffix('').as_posix().replace('/', '.')}" for p in core_files()]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if k.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_outer_layers_do_not_import_entry_points():
    """Adapters and storage implement ports; they never reach back into the CLI, GUI or container."""
    offences = []
    for pkg in ("adapters", "storage"):
        for path in (ROOT / pkg).rglob("*.py"):
            for line, name in _imports(path):
                if name.split(".")[0] == "gui" or name in ("locdiff.cli", "locdiff.container"):
                    offences.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offences, "\n".join(offences)
