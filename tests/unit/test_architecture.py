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


# --------------------------------------------------------------------------- small modules, thin commands
MAX_MODULE_LINES = 400  # issue #14: no production module over 400 lines
MAX_CLI_FUNCTION_LINES = 60  # ... and no function over 60 lines in locdiff/cli/ (thin commands)
PRODUCTION = ("locdiff", "adapters", "storage", "gui", "benchmarks", "scripts")


def oversized(root: Path, packages=PRODUCTION, cli=("locdiff", "cli")) -> list[str]:
    """Every production module over :data:`MAX_MODULE_LINES` lines and every function under ``cli`` over
    :data:`MAX_CLI_FUNCTION_LINES` lines (decorators and docstring included), as ``path: what``."""
    found = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            lines = len(path.read_text().splitlines())
            if lines > MAX_MODULE_LINES:
                found.append(f"{path.relative_to(root)}: {lines} lines (at most {MAX_MODULE_LINES})")
    for path in sorted(root.joinpath(*cli).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                length = node.end_lineno - first + 1
                if length > MAX_CLI_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}: {node.name}() is {length} lines (at most {MAX_CLI_FUNCTION_LINES})")
    return found


def test_no_module_over_400_lines_and_no_cli_function_over_60():
    seen = [p for pkg in PRODUCTION for p in (ROOT / pkg).rglob("*.py")]
    assert len(seen) > 80 and any(p.parent.name == "cli" for p in seen)  # really looked at the tree
    offences = oversized(ROOT)
    assert not offences, "split these by what they hold:\n" + "\n".join(offences)


def test_the_size_check_fails_on_a_long_module_and_a_long_command(tmp_path):
    """The checker itself can fail: a planted 401-line module and a 61-line CLI function are both named."""
    (tmp_path / "locdiff" / "cli").mkdir(parents=True)
    (tmp_path / "storage").mkdir()
    (tmp_path / "storage" / "fits.py").write_text("x = 0\n" * MAX_MODULE_LINES)
    (tmp_path / "storage" / "big.py").write_text("x = 0\n" * (MAX_MODULE_LINES + 1))
    body = "    y = 1\n"
    (tmp_path / "locdiff" / "cli" / "main.py").write_text(
        "def short():\n" + body * (MAX_CLI_FUNCTION_LINES - 1)
        + "\n\n@staticmethod\ndef long():\n" + body * (MAX_CLI_FUNCTION_LINES - 1)
    )
    offences = oversized(tmp_path)
    assert offences == [
        f"storage/big.py: {MAX_MODULE_LINES + 1} lines (at most {MAX_MODULE_LINES})",
        f"locdiff/cli/main.py: long() is {MAX_CLI_FUNCTION_LINES + 1} lines (at most {MAX_CLI_FUNCTION_LINES})",
    ]


# --------------------------------------------------------------------------- one source per choice list
#: Every list of choices and its one home (a tuple literal, or a dict literal whose keys are the choices).
CHOICE_LISTS = {
    "locdiff/core/diffusion.py": ("SAMPLERS", "PROJECTIONS", "LOSSES", "SCHEDULES", "WEIGHTINGS", "PARAMETERIZATIONS"),
    "locdiff/core/reduction.py": ("REDUCERS",),
    "locdiff/core/anchors.py": ("ANCHOR_SAMPLINGS",),
    "locdiff/core/hybrid.py": ("HYBRID_RULES",),
    "locdiff/services/hybrid.py": ("HYBRID_SOURCES",),
    "locdiff/core/splits.py": ("SPLITS",),
    "locdiff/core/multimodal.py": ("TRUTHS", "KINDS"),
    "locdiff/core/calibration.py": ("FAMILIES",),
    "locdiff/config.py": ("EMBEDDERS", "VIEWS"),
    "locdiff/services/studies/settings.py": ("STUDIES",),
    "adapters/benchmark_formats.py": ("LAYOUTS",),
    "storage/schema.py": ("RUN_STATUSES",),
    "gui/heat.py": ("SCALE_LABELS",),
}


def _string_set(node: ast.AST) -> frozenset[str] | None:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        items = node.elts
    elif isinstance(node, ast.Dict):
        items = node.keys
    else:
        return None
    if len(items) >= 2 and all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in items):
        return frozenset(e.value for e in items)
    return None


def duplicated_choice_lists(root: Path, homes=CHOICE_LISTS, packages=PRODUCTION) -> list[str]:
    """Literal tuples / lists / sets anywhere in ``packages`` spelling a whole registered choice list again."""
    lists: dict[frozenset[str], str] = {}
    defining: set[tuple[str, int]] = set()
    for rel, names in homes.items():
        for stmt in ast.parse((root / rel).read_text()).body:
            target = stmt.targets[0] if isinstance(stmt, ast.Assign) else getattr(stmt, "target", None)
            if isinstance(target, ast.Name) and target.id in names:
                choices = _string_set(stmt.value)
                assert choices, f"{rel}: {target.id} is not a literal list of choices"
                lists[choices] = f"{rel}:{target.id}"
                defining.add((rel, stmt.value.lineno))
        missing = set(names) - {v.split(":")[1] for k, v in lists.items() if v.startswith(rel + ":")}
        assert not missing, f"{rel}: no {sorted(missing)} (update CHOICE_LISTS)"
    found = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")) if (root / pkg).is_dir() else []:
            rel = str(path.relative_to(root))
            for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
                choices = _string_set(node) if not isinstance(node, ast.Dict) else None
                if choices in lists and (rel, node.lineno) not in defining:
                    found.append(f"{rel}:{node.lineno} spells {lists[choices]} again")
    return found


def test_each_choice_list_has_one_source():
    """Reducers, projections, samplers, losses, embedders, views, splits, formats, ...: spelled once, imported elsewhere."""
    offences = duplicated_choice_lists(ROOT)
    assert not offences, "import the list from its home instead:\n" + "\n".join(offences)


def test_the_choice_list_check_fails_on_a_second_spelling(tmp_path):
    (tmp_path / "locdiff" / "cli").mkdir(parents=True)
    (tmp_path / "gui").mkdir()
    (tmp_path / "locdiff" / "core.py").write_text('VIEWS = ("globe", "flat")\nOTHER = ("globe", "moon")\n')
    (tmp_path / "locdiff" / "cli" / "main.py").write_text('import argparse\nCHOICES = ["flat", "globe"]\n')
    (tmp_path / "gui" / "app.py").write_text('p.add_argument("--view", choices=("globe", "flat"))\nsub = ("globe",)\n')
    found = duplicated_choice_lists(tmp_path, homes={"locdiff/core.py": ("VIEWS",)})
    assert found == ["locdiff/cli/main.py:2 spells locdiff/core.py:VIEWS again", "gui/app.py:1 spells locdiff/core.py:VIEWS again"]
