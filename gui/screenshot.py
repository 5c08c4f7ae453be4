"""Render the window with a prediction and save a PNG (for docs/*.png).

    xvfb-run -a -s "-screen 0 1920x1200x24" env QT_QPA_PLATFORM=xcb \\
        python -m gui.screenshot docs/screenshot.png [--checkpoint RUN | --demo] [--photo PATH | --text QUERY] [--view flat]

``--demo`` (the default when no checkpoint is given) uses the synthetic-density service; with a
checkpoint the prediction service comes from the composition root (``locdiff.container``). The
entry points' ``--screenshot OUT.png`` (``locdiff-gui``, ``python -m locdiff.cli gui``) use :func:`capture`.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import argparse
import sys
import time
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from locdiff.config import VIEWS

DEFAULT_PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos" / "stockholm-panorama.jpg"


def settle(ms: int = 400) -> None:
    """Let Qt lay out, paint and upload textures."""
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
        time.sleep(0.01)


def capture(win: QtWidgets.QWidget, path: Path) -> Path:
    """Save the whole window (including the OpenGL globe) as a PNG."""
    settle()
    win.repaint()
    settle(200)
    img = win.grab().toImage()
    # QWidget.grab() leaves out what the globe paints with QPainter inside paintGL (markers, legend):
    # paste the globe's own framebuffer over it.
    globe = getattr(win, "globe", None)
    if globe is not None and globe.isVisible():
        fb = globe.grabFramebuffer()
        top_left = globe.mapTo(win, QtCore.QPoint(0, 0))
        painter = QtGui.QPainter(img)
        painter.drawImage(QtCore.QRect(top_left, globe.size()), fb)
        painter.end()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not img.save(str(path), "PNG"):
        raise OSError(f"could not write {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gui.screenshot", description=__doc__.splitlines()[0])
    p.add_argument("output", type=Path)
    p.add_argument("--photo", type=Path, action="append", default=None)
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--text", default=None, help="a place query instead of a photo")
    p.add_argument("--demo", action="store_true")
    p.add_argument("--workdir", default="runs", help="where the embedding cache lives (with --checkpoint)")
    p.add_argument("--view", choices=VIEWS, default=VIEWS[0])
    p.add_argument("--size", default="1600x1000")
    p.add_argument("--zoom", type=float, default=2.7, help="globe camera distance (earth radii)")
    args = p.parse_args(argv)

    from gui.app import MainWindow, _app
    from gui.demo import MemoryHistory, demo_gps_reader, demo_service_factory

    app = _app()
    gps = demo_gps_reader
    if args.demo or args.checkpoint is None:
        factory = demo_service_factory
    else:
        from gui.app import service_factory
        from locdiff.container import gps_reader

        factory, gps = service_factory("auto", args.workdir), gps_reader()
    win = MainWindow(factory, MemoryHistory(), gps, args.checkpoint)
    w, h = (int(x) for x in args.size.lower().split("x"))
    win.resize(w, h)
    win.set_view(args.view)
    win.show()
    if args.text:
        win.query.setText(args.text)
        win.run_text(args.text)
    else:
        win.open_paths(args.photo or [Path(DEFAULT_PHOTO)])
    if not win.wait_idle(600000) or not win.session:
        print("screenshot: prediction did not finish", file=sys.stderr)
        return 1
    if win.globe is not None and args.view == "globe":
        win.globe.zoom_to(args.zoom)
    capture(win, args.output)
    print(f"saved {args.output} ({win.view_name()} view, {len(win.session)} prediction(s))")
    win.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
