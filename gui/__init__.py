"""LocDiff desktop app (PySide6 + pyqtgraph): drop a photo, see where on Earth it was taken.

A driving adapter of the hexagon: it calls the prediction use case it is given (``run`` /
``MainWindow`` take a service factory, an experiment store and an EXIF GPS reader from the
composition root) and never imports ``adapters`` or ``storage``.

Modules: ``app`` (entry points), ``window`` (the main window) with its jobs in ``intake`` (drops,
queries, background jobs, Cancel), ``history`` and ``export``; ``globe`` / ``sphere`` / ``overlay``
(OpenGL globe), ``flatmap`` (2D map, the fallback without OpenGL), ``labels`` (label placement),
``panel`` (side panel), ``workers`` / ``jobs`` (background work), ``viewdata`` (display values,
history payloads), ``formats`` (GeoJSON / CSV / PNG exports), ``regions`` (credible regions, contours,
polygons), ``heat`` (colour map), ``assets`` (Blue Marble, GSHHS boundaries), ``geocode``, ``demo`` (a
fake service for ``--demo``, tests and benchmarks), ``screenshot``, ``qtcompat``, ``triton_guard``
(imported here: keeps triton's LLVM out of a process that draws with Mesa).
"""

from gui import triton_guard as _triton_guard

_triton_guard.block()  # before anything can load Mesa's LLVM (see gui/triton_guard.py)
