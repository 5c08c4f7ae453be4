"""The LocDiff desktop app: drop a photo, see where on Earth it was taken, as a heatmap on a globe.

Entry points: ``locdiff-gui`` (:func:`main`) and ``python -m locdiff.cli gui``, which calls
:func:`run` with the composition root's service factory, experiment store and EXIF GPS reader.
The window drives the prediction use case only; it never imports adapters or storage.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from gui.geocode import Geocoder, reverse_geocode
from gui.jobs import GpsReader, ServiceFactory
from gui.window import CHUNK, IMAGE_SUFFIXES, MainWindow, expand_paths

__all__ = ["CHUNK", "IMAGE_SUFFIXES", "MainWindow", "expand_paths", "main", "run"]


# ====================================================================== entry points
def _app(argv: Sequence[str] | None = None) -> QtWidgets.QApplication:
    app = QtWidgets.QApplication.instance()
    if app is None:
        QtCore.QCoreApplication.setAttribute(QtCore.Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
        app = QtWidgets.QApplication(list(argv) if argv else [sys.argv[0]])
        app.setApplicationName("LocDiff")
        # hand the GIL to the UI thread sooner while a worker runs Python code (default 5 ms)
        sys.setswitchinterval(0.001)
        app.setStyle("Fusion")
        _dark_palette(app)
    return app


def _dark_palette(app: QtWidgets.QApplication) -> None:
    pal = QtGui.QPalette()
    C = QtGui.QPalette.ColorRole
    for role, rgb in ((C.Window, (32, 34, 40)), (C.WindowText, (225, 225, 225)), (C.Base, (22, 24, 28)),
                      (C.AlternateBase, (36, 38, 44)), (C.Text, (225, 225, 225)), (C.Button, (44, 46, 54)),
                      (C.ButtonText, (225, 225, 225)), (C.Highlight, (58, 110, 200)),
                      (C.HighlightedText, (255, 255, 255)), (C.ToolTipBase, (40, 40, 48)),
                      (C.ToolTipText, (230, 230, 230)), (C.PlaceholderText, (140, 140, 150))):
        pal.setColor(role, QtGui.QColor(*rgb))
    app.setPalette(pal)


def run(
    service_factory: ServiceFactory,
    store: Any = None,
    gps_reader: GpsReader | None = None,
    checkpoint: Path | None = None,
    *,
    inputs: Sequence[Path] = (),
    geocoder: Geocoder | None = reverse_geocode,
    view: str | None = None,
    screenshot: Path | None = None,
    size: tuple[int, int] | None = None,
) -> int:
    """Open the window (blocking) with the composition root's factory, store and GPS reader.

    ``inputs`` are opened at start; with ``screenshot`` the window renders, saves a PNG and exits.
    """
    app = _app()
    win = MainWindow(service_factory, store, gps_reader, checkpoint, geocoder=geocoder)
    if size:
        win.resize(*size)
    if view:
        win.set_view(view)
    win.show()
    if inputs:
        win.open_paths([Path(p) for p in inputs])
    if screenshot is not None:
        from gui.screenshot import capture

        win.wait_idle(120000)
        capture(win, Path(screenshot))
        win.close()
        return 0
    return app.exec()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locdiff-gui", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="*", type=Path, help="photos (or folders of photos) to locate at start")
    p.add_argument("--checkpoint", type=Path, default=None, help="model checkpoint to load")
    p.add_argument("--demo", action="store_true",
                   help="run without a model: synthetic densities (to try the interface)")
    p.add_argument("--view", choices=("globe", "flat"), default=None)
    p.add_argument("--screenshot", type=Path, default=None, help="render, save this PNG and exit")
    p.add_argument("--size", default=None, help="window size WxH, e.g. 1600x1000")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``locdiff-gui``: the window wired by the composition root (``--demo``: with a fake model)."""
    args = _parser().parse_args(argv)
    size = tuple(int(x) for x in args.size.lower().split("x")) if args.size else None
    if args.demo:
        from gui.demo import MemoryHistory, demo_gps_reader, demo_service_factory

        return run(demo_service_factory, MemoryHistory(), demo_gps_reader, args.checkpoint, inputs=args.inputs,
                   view=args.view, screenshot=args.screenshot, size=size)
    try:
        from locdiff.cli import main as cli_main
    except ImportError as exc:
        print(f"locdiff-gui: the LocDiff core is not available ({exc}); try --demo", file=sys.stderr)
        return 2
    forward = ["gui"]
    if args.checkpoint is not None:
        forward += ["--checkpoint", str(args.checkpoint)]
    return int(cli_main(forward + [str(p) for p in args.inputs]) or 0)


if __name__ == "__main__":
    sys.exit(main())
