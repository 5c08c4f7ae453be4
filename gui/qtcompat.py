"""Work around a reference-count bug of the installed PySide6 on CPython < 3.12.

PySide6/shiboken6 6.12 returns ``None`` from void methods (``setText``, ``QPainterPath.moveTo``,
``QByteArray.resize``, ...) and ``True``/``False`` from signal emission without taking a new
reference. From Python 3.12 on these objects are immortal (PEP 683) and that is harmless; on 3.11
every such call takes one reference away, and after some ten thousand calls CPython aborts with
``Fatal Python error: none_dealloc`` (or ``bool_dealloc``). A pyqtgraph map with thousands of
coastline pieces gets there within a few repaints.

:func:`install` detects the leak (a few void calls, compare ``sys.getrefcount(None)``) and, only
then, gives ``None``, ``True`` and ``False`` a reference count so large that it cannot reach zero:
the same effect as the immortal objects of Python 3.12. Importing this module installs it.

Importing it also asks Qt to share OpenGL contexts between widgets (``AA_ShareOpenGLContexts``,
only possible before the ``QApplication`` exists): pyqtgraph caches its shader programs per class,
which is only valid when every ``GLViewWidget`` shares one context group.
"""

from __future__ import annotations

import ctypes
import sys

_BOOST = 1 << 40
_installed = False


def leaks() -> bool:
    """Whether a void PySide6 method call drops a reference to ``None``."""
    from PySide6 import QtCore

    obj = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(64):
        obj.setObjectName("x")
    return sys.getrefcount(None) < before - 32


def install() -> bool:
    """Apply the guard if needed; returns whether it was applied (idempotent)."""
    global _installed
    if _installed:
        return True
    if sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    try:
        if not leaks():
            return False
    except ImportError:
        return False
    for singleton in (None, True, False):
        # ob_refcnt is the first field of every PyObject
        ctypes.c_ssize_t.from_address(id(singleton)).value += _BOOST
    _installed = True
    return True


def share_gl_contexts() -> None:
    try:
        from PySide6 import QtCore
    except ImportError:
        return
    if QtCore.QCoreApplication.instance() is None:
        QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)


install()
share_gl_contexts()
