"""The app's place in the hexagon: it drives the container, never the CLI; small modules; one protocol."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUI = sorted((ROOT / "gui").glob("*.py"))


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_the_gui_reaches_the_model_through_the_container_only():
    bad = [f"{p.name}: {m}" for p in GUI for m in _imports(p)
           if m.split(".")[0] in ("adapters", "storage") or m.startswith("locdiff.cli")]
    assert not bad, bad
    # no factory named by an import string (gui/screenshot.py used to load the container that way)
    assert not [p.name for p in GUI if "import_module" in p.read_text(encoding="utf-8")]
    assert any("locdiff.container" in _imports(p) for p in GUI)  # the entry point wires itself from it


def test_no_gui_module_is_over_400_lines():
    sizes = {p.name: len(p.read_text(encoding="utf-8").splitlines()) for p in GUI}
    assert max(sizes.values()) <= 400, sizes


def test_one_prediction_service_protocol():
    defined = [p for p in (*GUI, *(ROOT / "locdiff").rglob("*.py"))
               if "class PredictionService(Protocol)" in p.read_text(encoding="utf-8")]
    assert [p.relative_to(ROOT).as_posix() for p in defined] == ["locdiff/ports.py"]


def test_the_app_process_keeps_triton_out(tmp_path):
    """Importing ``gui`` blocks triton (its LLVM would collide with Mesa's llvmpipe); an env var opts out."""
    import os
    import subprocess
    import sys

    code = ("import gui, sys\n"
            "try:\n    import triton\n    print('loaded')\nexcept ImportError:\n    print('blocked')\n")
    env = {k: v for k, v in os.environ.items() if k != "LOCDIFF_ALLOW_TRITON"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "blocked", out.stderr
    try:
        import importlib.util

        has_triton = importlib.util.find_spec("triton") is not None
    except ValueError:  # this process already imported gui: triton is marked absent here
        has_triton = True
    if has_triton:
        env["LOCDIFF_ALLOW_TRITON"] = "1"
        code2 = "import gui, sys\nprint(sys.modules.get('triton', 'absent') is None)\n"
        out = subprocess.run([sys.executable, "-c", code2], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.stdout.strip() == "False", out.stderr
