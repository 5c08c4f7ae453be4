"""Drive the real window in a fresh process (run by ``test_real_queries.py``; a crash shows as its exit code).

    python -m tests.gl.real_app RUN_DIR --text "a query"      # typed into the query bar, key by key
    python -m tests.gl.real_app RUN_DIR --photo PATH          # dropped on the window

The window is built as ``locdiff-gui`` builds it (globe on, the container's prediction service); the
globe is shown before the model's embedder is first used. Prints one JSON line describing what was
drawn and exits 0, or exits 3 when nothing was drawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run", type=Path)
    p.add_argument("--workdir", default="runs")
    p.add_argument("--text", default=None)
    p.add_argument("--photo", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)

    from functools import partial

    from PySide6 import QtCore, QtTest

    from gui.app import MainWindow, _app
    from gui.demo import MemoryHistory
    from locdiff.container import build_prediction_service, gps_reader

    app = _app()
    factory = partial(build_prediction_service, device="cpu", workdir=args.workdir)
    win = MainWindow(factory, MemoryHistory(), gps_reader(), args.run, geocoder=None)
    win.resize(1000, 700)
    win.show()
    QtTest.QTest.qWaitForWindowExposed(win)
    ms = int(args.timeout * 1000)
    if not win.wait_idle(ms):
        print("model did not load", file=sys.stderr)
        return 4
    gl = win.globe is not None and win.view_name() == "globe"
    if gl:  # the globe has drawn (Mesa's LLVM is loaded) before the first prediction
        win.globe.grabFramebuffer()
    if args.text is not None:
        win.query.setFocus()
        QtTest.QTest.keyClicks(win.query, args.text)
        QtTest.QTest.keyClick(win.query, QtCore.Qt.Key.Key_Return)
    else:
        mime = QtCore.QMimeData()
        mime.setUrls([QtCore.QUrl.fromLocalFile(str(args.photo))])
        win.handle_mime(mime)
    app.processEvents()
    if not win.wait_idle(ms):
        print("prediction did not finish", file=sys.stderr)
        return 5
    app.processEvents()
    vp = win.current
    errors = win.messages.texts(errors_only=True)
    if vp is None:
        print(json.dumps({"drawn": False, "errors": errors}))
        return 3
    peak = win.flat.heat_peak_latlon()
    out = {"drawn": True, "gl": gl, "item": vp.item, "point": list(vp.point), "peak": list(peak),
           "modes": [[m.lat, m.lon, m.mass] for m in vp.modes], "truth": vp.truth, "errors": errors}
    if gl:
        img = win.globe.grabFramebuffer()
        out["globe_size"] = [img.width(), img.height()]
    print(json.dumps(out))
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
