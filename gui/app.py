"""The LocDiff desktop app: drop a photo, see where on Earth it was taken, as a heatmap on a globe.

Entry points: ``locdiff-gui`` (:func:`main`, wired here from ``locdiff.container``) and
``python -m locdiff.cli gui``, which calls :func:`run` with the container's service factory,
experiment store and EXIF GPS reader. The GUI never calls the CLI; it reaches the model only through
the ``PredictionService`` port the container builds.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from locdiff.config import VIEWS

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
    text: str | None = None,
    geocoder: Geocoder | None = reverse_geocode,
    view: str | None = None,
    screenshot: Path | None = None,
    size: tuple[int, int] | None = None,
    timeout_s: float = 600.0,
) -> int:
    """Open the window (blocking) with the composition root's factory, store and GPS reader.

    ``inputs`` (photos) and ``text`` (a place query) are answered at start; with ``screenshot`` the
    window waits for the answers, draws them, saves a PNG and exits (0; 1 if nothing could be answered).
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
    if text:
        win.query.setText(text)
        win.run_text(text)
    if screenshot is not None:
        from gui.screenshot import capture

        done = win.wait_idle(int(timeout_s * 1000))
        capture(win, Path(screenshot))
        errors = win.messages.texts(errors_only=True)
        win.close()
        if not done:
            print(f"locdiff-gui: the prediction did not finish within {timeout_s:.0f} s", file=sys.stderr)
            return 1
        for e in errors:
            print(f"locdiff-gui: {e}", file=sys.stderr)
        print(f"saved {screenshot} ({len(win.session)} prediction(s))")
        return 0 if (win.session or not (inputs or text)) else 1
    return app.exec()


def add_window_arguments(p: argparse.ArgumentParser) -> None:
    """The flags ``locdiff-gui`` and ``python -m locdiff.cli gui`` share (besides the model)."""
    p.add_argument("--text", default=None, help="a place query to answer at start")
    p.add_argument("--view", choices=VIEWS, default=None)
    p.add_argument("--screenshot", type=Path, default=None,
                   help="answer the inputs / --text, draw, save this PNG and exit")
    p.add_argument("--size", default=None, help="window size WxH, e.g. 1600x1000")


def parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"--size: expected WIDTHxHEIGHT such as 1600x1000, got {text!r}") from None
    return w, h


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="locdiff-gui", description=__doc__.splitlines()[0])
    p.add_argument("inputs", nargs="*", type=Path, help="photos (or folders of photos) to locate at start")
    p.add_argument("--checkpoint", "--run", dest="checkpoint", type=Path, default=None,
                   help="model: a run folder or a checkpoint folder")
    p.add_argument("--workdir", default="runs", help="where the history store and caches live (default: runs)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--demo", action="store_true",
                   help="run without a model: synthetic densities (to try the interface)")
    add_window_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``locdiff-gui``: the window wired by the composition root (``--demo``: with a fake model)."""
    args = _parser().parse_args(argv)
    size = parse_size(args.size)
    common = dict(inputs=args.inputs, text=args.text, view=args.view, screenshot=args.screenshot, size=size)
    if args.demo:
        from gui.demo import MemoryHistory, demo_gps_reader, demo_service_factory

        return run(demo_service_factory, MemoryHistory(), demo_gps_reader, args.checkpoint, **common)
    from locdiff.container import gps_reader, history_store

    return run(service_factory(args.device, args.workdir), history_store(args.workdir), gps_reader(), args.checkpoint, **common)


def service_factory(device: str, workdir: str):
    """checkpoint → the real prediction service, as the app loads models: LocDiff-H's gallery is the model's
    own training split, opened only when a query asks for it (the panel's LocDiff-H box)."""
    from functools import partial

    from locdiff.container import build_prediction_service

    return partial(build_prediction_service, device=device, workdir=workdir, hybrid="gallery")


if __name__ == "__main__":
    sys.exit(main())
