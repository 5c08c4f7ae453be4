"""GUI benchmark: globe heatmap redraw time, and event-loop latency while a prediction runs.

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb python benchmarks/bench_gui_redraw.py

1. Redraw: a new ``DensityGrid`` (180x360 and 360x720) shown on the globe, timed from the new grid
   to a finished frame (``glFinish``). Ours colours the grid and re-uploads one texture
   (``glTexSubImage2D``) on a fixed textured sphere. Baseline, measured in the same run: rebuild a
   vertex-coloured ``GLMeshItem`` sphere at the grid's resolution from scratch (what a per-vertex
   colour approach does for every new grid). Target: < 100 ms. Also the time of one still frame
   (rotation) and of the full ``show_prediction`` (heat + contours + markers).
2. Latency: a ``QTimer`` pings every 10 ms while a fake 2-second prediction (CPU-bound numpy work in
   the worker thread) runs and its result is drawn; reports how late the pings come.

Without a display (no OpenGL), part 1 is skipped and part 2 uses the flat map.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if not os.environ.get("DISPLAY"):
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import gui.qtcompat  # noqa: E402,F401  (before the QApplication)
import numpy as np  # noqa: E402
from PySide6 import QtCore, QtWidgets  # noqa: E402

PHOTO = next((p for p in (ROOT / "tests/data/photos/stockholm-panorama.jpg",
                          Path("/work/shared/data/photos/stockholm-panorama.jpg")) if p.exists()), None)


def pump(ms: float = 50) -> None:
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        QtWidgets.QApplication.processEvents()
        time.sleep(0.002)


def grid(n_lat: int, n_lon: int, seed: int):
    from gui.demo import mixture

    rng = np.random.default_rng(seed)
    centres = [(float(rng.uniform(-60, 70)), float(rng.uniform(-180, 180))) for _ in range(3)]
    return mixture(centres, [0.6, 0.3, 0.1], [400.0, 200.0, 100.0], n_lat, n_lon)


def finish_frame(view) -> None:
    """Render one frame now and wait for the GPU (llvmpipe here) to finish it."""
    from OpenGL import GL

    view.makeCurrent()  # binds the widget's framebuffer
    GL.glViewport(0, 0, view.deviceWidth(), view.deviceHeight())
    view.paintGL()
    GL.glFinish()
    view.doneCurrent()


def bench_redraw(repeats: int) -> dict:
    import pyqtgraph.opengl as gl

    from gui import heat, regions
    from gui.globe import GlobeView, gl_available
    from gui.viewdata import ViewPrediction

    if not gl_available():
        print("redraw: no OpenGL context here (run under xvfb-run with QT_QPA_PLATFORM=xcb); skipped")
        return {}
    view = GlobeView()
    view.resize(1280, 760)
    view.show()
    pump(300)
    finish_frame(view)
    results: dict = {}
    for n_lat, n_lon in ((180, 360), (360, 720)):
        grids = [grid(n_lat, n_lon, s) for s in range(repeats + 1)]
        # --- ours: colour + texture re-upload on the fixed sphere
        view.set_heat(grids[0][2], "sqrt")
        finish_frame(view)
        ours = []
        for lat, lon, dens, mass in grids[1:]:
            t0 = time.perf_counter()
            view.set_heat(dens, "sqrt")
            finish_frame(view)
            ours.append(time.perf_counter() - t0)
        # --- ours, whole prediction: heat + credible contours + samples + markers
        full = []
        for lat, lon, dens, mass in grids[1:]:
            t0 = time.perf_counter()
            cred = regions.credible_thresholds(dens, mass)
            contours = {lv: regions.contour_segments(dens, lat, lon, t) for lv, t in cred.items()}
            vp = ViewPrediction(item="bench", kind="image", point=(float(lat[0]), 0.0),
                                samples=np.zeros((16, 2)), modes=(), lat=lat, lon=lon,
                                density=dens.astype(np.float32), mass=mass.astype(np.float32), credible=cred)
            view.show_prediction(vp, contours, "sqrt", focus=False)
            finish_frame(view)
            full.append(time.perf_counter() - t0)
        view.set_heat(None)
        # --- baseline: a vertex-coloured mesh sphere rebuilt from scratch for each grid
        base = []
        old = None
        for lat, lon, dens, mass in grids[1:]:
            t0 = time.perf_counter()
            md = gl.MeshData.sphere(rows=n_lat, cols=n_lon, radius=1.0015)
            rgba = heat.heat_rgba(dens, "sqrt")
            # MeshData.sphere's vertices run rows (south->north) x cols (from lon 0 eastwards)
            rows = np.clip(np.round(np.linspace(n_lat - 1, 0, n_lat + 1)).astype(int), 0, n_lat - 1)
            cols = (np.arange(n_lon) + n_lon // 2) % n_lon
            vcol = (rgba[rows][:, cols].reshape(-1, 4) / 255.0).astype(np.float32)
            md.setVertexColors(vcol)
            item = gl.GLMeshItem(meshdata=md, smooth=True, shader=None, glOptions="translucent")
            if old is not None:
                view.removeItem(old)
            view.addItem(item)
            old = item
            finish_frame(view)
            base.append(time.perf_counter() - t0)
        if old is not None:
            view.removeItem(old)
        # --- a still frame (e.g. while rotating)
        view.set_heat(grids[1][2], "sqrt")
        finish_frame(view)
        frames = []
        for k in range(repeats):
            view.orbit(2.0, 0.0)
            t0 = time.perf_counter()
            finish_frame(view)
            frames.append(time.perf_counter() - t0)
        med = statistics.median
        key = f"{n_lat}x{n_lon}"
        results[key] = {
            "ours_ms": 1000 * med(ours), "ours_max_ms": 1000 * max(ours),
            "full_prediction_ms": 1000 * med(full),
            "baseline_ms": 1000 * med(base), "baseline_max_ms": 1000 * max(base),
            "ratio_baseline_over_ours": med(base) / med(ours),
            "frame_ms": 1000 * med(frames),
        }
        r = results[key]
        print(f"redraw {key:>8}: ours {r['ours_ms']:7.1f} ms (max {r['ours_max_ms']:.1f})  "
              f"| whole prediction {r['full_prediction_ms']:7.1f} ms  "
              f"| baseline mesh rebuild {r['baseline_ms']:8.1f} ms (max {r['baseline_max_ms']:.1f})  "
              f"| baseline/ours {r['ratio_baseline_over_ours']:5.1f}x  | still frame {r['frame_ms']:.1f} ms  "
              f"| target < 100 ms: {'met' if r['ours_ms'] < 100 else 'MISSED'}")
    view.close()
    return results


def bench_latency(seconds: float, view: str | None = None, busy: bool = True) -> dict:
    from gui.app import MainWindow
    from gui.demo import DemoPredictionService, MemoryHistory

    svc = DemoPredictionService({"stockholm": (59.33, 18.07)}, delay_s=seconds, busy=busy)
    win = MainWindow(lambda c: svc, MemoryHistory(), None, None, geocoder=None)
    win.resize(1280, 800)
    if view:
        win.set_view(view)
    win.show()
    pump(300)
    win.wait_idle()
    pump(200)
    stamps: list[float] = []
    timer = QtCore.QTimer()
    timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
    timer.setInterval(10)
    timer.timeout.connect(lambda: stamps.append(time.perf_counter()))
    timer.start()
    t0 = time.perf_counter()
    win.open_paths([PHOTO])
    win.wait_idle(60000)
    elapsed = time.perf_counter() - t0
    pump(100)  # include the frame that shows the result
    timer.stop()
    stamps = np.array(stamps)
    late = (np.diff(stamps) - 0.010) * 1000
    worst = np.argsort(late)[::-1][:5]
    print("  worst pings (ms late @ s after start):",
          ", ".join(f"{late[i]:.0f}@{stamps[i] - t0:.2f}" for i in sorted(worst)))
    res = {
        "view": win.view_name(),
        "prediction_s": elapsed,
        "pings": int(len(stamps)),
        "lateness_median_ms": float(np.median(late)),
        "lateness_p99_ms": float(np.percentile(late, 99)),
        "lateness_max_ms": float(late.max()),
    }
    res["worker"] = "busy (numpy)" if busy else "sleeping"
    print(f"latency ({res['view']} view, {res['worker']} worker): {res['pings']} pings over a {elapsed:.2f} s prediction; "
          f"10 ms timer late by median {res['lateness_median_ms']:.1f} ms, p99 {res['lateness_p99_ms']:.1f} ms, "
          f"max {res['lateness_max_ms']:.1f} ms")
    win.close()
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--skip-redraw", action="store_true")
    p.add_argument("--all-latency", action="store_true", help="also flat view and a sleeping worker")
    args = p.parse_args(argv)
    from gui.app import _app

    app = _app()
    print(f"platform {app.platformName()}, {os.cpu_count()} CPUs")
    out = {"redraw": {} if args.skip_redraw else bench_redraw(args.repeats),
           "latency": bench_latency(args.seconds)}
    if args.all_latency:
        out["latency_flat"] = bench_latency(args.seconds, view="flat")
        out["latency_sleep"] = bench_latency(args.seconds, busy=False)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
