"""OpenGL tests: need a display with GL (run under ``xvfb-run -a -s "-screen 0 1280x800x24"``).

Everything here is marked ``gl`` and skipped when no OpenGL context can be made (no ``DISPLAY``,
or ``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")

try:  # before pytest-qt creates the QApplication: shared GL contexts, PySide6 refcount guard
    import gui.qtcompat  # noqa: F401
except ImportError:
    pass


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.gl)


@pytest.fixture
def gl_ok(qapp):
    if not os.environ.get("DISPLAY"):
        pytest.skip("no DISPLAY: run under xvfb-run")
    from gui.globe import gl_available

    if not gl_available():
        pytest.skip(f"no OpenGL context on platform {qapp.platformName()!r}")
    return True


def to_array(img) -> np.ndarray:
    """QImage -> [H, W, 4] uint8 RGBA."""
    from PySide6 import QtGui

    img = img.convertToFormat(QtGui.QImage.Format.Format_RGBA8888)
    h, w = img.height(), img.width()
    buf = np.frombuffer(img.constBits(), np.uint8, count=img.bytesPerLine() * h)
    return buf.reshape(h, img.bytesPerLine())[:, : w * 4].reshape(h, w, 4).copy()
