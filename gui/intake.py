"""The window's inputs and background jobs: drops, pastes, the query bar, Cancel, and job results.

:class:`IntakeMixin` is mixed into :class:`gui.window.MainWindow`; it turns what the user gives into
:class:`gui.workers.Job` s (model work runs on a one-thread pool) and the finished jobs into
session entries, messages and the banner.
"""

from __future__ import annotations

import gui.qtcompat  # noqa: F401  (must precede heavy Qt use; see the module)

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PySide6 import QtCore, QtGui, QtWidgets

from gui import jobs
from gui.jobs import JobResult
from gui.workers import Job

CHUNK = 16  # files per background job: results stream in, cancelling is prompt
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files as given; folders replaced by the images directly inside them (sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


@dataclass
class Batch:
    """One user request (a drop, a paste, a query), possibly split into several jobs."""

    kind: str
    total: int
    jobs_left: int
    label: str = ""
    ok: int = 0
    failed: int = 0
    cancelled: bool = False
    shown: bool = False
    errors: list = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)


class IntakeMixin:
    """Inputs → jobs → results. Needs the window's ``holder``, ``pool``, ``jobs``, panels and views."""

    # ================================================================== inputs
    def choose_images(self) -> None:
        paths, _ = QtWidgets.QFileDialog.getOpenFileNames(
            self, "Open photos", str(Path.cwd()),
            "Images (" + " ".join(f"*{s}" for s in sorted(IMAGE_SUFFIXES)) + ");;All files (*)")
        if paths:
            self.open_paths([Path(p) for p in paths])

    def open_paths(self, paths: Sequence[Path], settings=None) -> None:
        """Predict where each photo was taken, in the background, in chunks of ``CHUNK`` files
        (results of a chunk appear as soon as it is done; the first result of the batch is shown)."""
        files = expand_paths(paths)
        if not files:
            self.messages.add("Nothing to open: no image files found", error=True)
            return
        settings = settings if settings is not None else self.settings_panel.settings()
        gps, geocoder, holder = self.gps_reader, self.geocoder, self.holder
        chunks = [files[i:i + CHUNK] for i in range(0, len(files), CHUNK)]
        what = files[0].name if len(files) == 1 else f"{len(files)} photos"
        batch = Batch("images", len(files), len(chunks), what)
        for k, chunk in enumerate(chunks):
            job = Job("images", lambda progress, cancelled, chunk=chunk: jobs.predict_images(
                holder, chunk, settings, gps, geocoder, progress, cancelled), f"{len(chunk)} file(s)",
                total=len(chunk))
            job.batch, job.offset = batch, k * CHUNK
            self._submit(job, f"Locating {what}\u2026")

    def submit_query(self) -> None:
        text = self.query.text().strip()
        if text:
            self.run_text(text)

    def run_text(self, text: str, settings=None) -> None:
        settings = settings if settings is not None else self.settings_panel.settings()
        geocoder, holder = self.geocoder, self.holder
        job = Job("text", lambda progress, cancelled: jobs.predict_text(holder, text, settings, geocoder, cancelled,
                                                                        progress), text)
        job.batch, job.offset = Batch("text", 1, 1, f"\u201c{text[:40]}\u201d"), 0
        self._submit(job, f"Locating \u201c{text[:40]}\u201d\u2026")

    def resample(self) -> None:
        """A new draw for the current input: the next seed (the same seed always gives the same answer)."""
        vp = self.current
        if vp is None:
            self.messages.add("Nothing to resample yet", error=True)
            return
        settings = self.settings_panel.next_seed()
        if vp.kind == "text":
            self.run_text(vp.item, settings)
        else:
            self.open_paths([Path(vp.item)], settings)

    def paste(self) -> None:
        if not self.handle_mime(QtGui.QGuiApplication.clipboard().mimeData()):
            self.messages.add("The clipboard holds no image, image file or text", error=True)

    def handle_mime(self, mime: QtCore.QMimeData | None) -> bool:
        """Dropped or pasted data: image files (URLs), raw image data (saved to a temp PNG), or text."""
        if mime is None:
            return False
        remote = False
        if mime.hasUrls():
            local = [Path(u.toLocalFile()) for u in mime.urls() if u.isLocalFile()]
            if local:
                self.open_paths(local)
                return True
            remote = bool(mime.urls())
        if mime.hasImage():
            img = QtGui.QImage(mime.imageData())
            if not img.isNull():
                self._pasted += 1
                path = Path(self._tmp.name) / f"pasted-{self._pasted}.png"
                if img.save(str(path), "PNG"):
                    self.open_paths([path])
                    return True
                self.messages.add("Could not save the pasted image", error=True)
                return False
        if remote:  # e.g. a link dragged from a browser, without the image data
            self.messages.add("Only local files can be opened (save the image first)", error=True)
            return True
        if mime.hasText():
            text = mime.text().strip()
            if not text:
                return False
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            files = [Path(QtCore.QUrl(ln).toLocalFile() if ln.startswith("file:") else ln) for ln in lines]
            if files and all(f.exists() for f in files):
                self.open_paths(files)
            else:
                self.query.setText(text)
                self.run_text(text)
            return True
        return False

    def dragEnterEvent(self, event: QtGui.QDragEnterEvent) -> None:
        md = event.mimeData()
        if md.hasUrls() or md.hasImage() or md.hasText():
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event: QtGui.QDragMoveEvent) -> None:
        event.acceptProposedAction()

    def dropEvent(self, event: QtGui.QDropEvent) -> None:
        if self.handle_mime(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    # ================================================================== jobs
    def _submit(self, job: Job, status: str) -> None:
        job.signals.progress.connect(self._job_progress)
        job.signals.finished.connect(self._job_finished)
        self.jobs[job.id] = job
        self.pool.start(job)
        self.status_label.setText(status)
        self._update_busy()

    def _update_busy(self) -> None:
        busy = bool(self.jobs)
        cancellable = any(j.kind != "load" for j in self.jobs.values())
        if busy and self._progress_job not in self.jobs:
            # show the oldest pending job; a determinate bar (a "busy" animation would keep
            # repainting the window, which costs a lot with software OpenGL)
            job = self.jobs[min(self.jobs)]
            self._progress_job = job.id
            batch = getattr(job, "batch", None)
            self.progress.setRange(0, batch.total if batch else job.total)
            self.progress.setValue(job.offset if batch else 0)
            self.progress.setFormat("loading model\u2026" if job.kind == "load" else "%v/%m")
        self.progress.setVisible(busy)
        self.cancel_button.setVisible(busy)
        self.cancel_button.setEnabled(cancellable)
        self.act_cancel.setEnabled(cancellable)
        if not busy:
            self._progress_job = None

    @QtCore.Slot(int, int, int)
    def _job_progress(self, job_id: int, done: int, total: int) -> None:
        job = self.jobs.get(job_id)
        if job is None or job.is_cancelled():
            return
        self._progress_job = job_id
        batch = getattr(job, "batch", None)
        if job.kind == "text":  # diffusion steps of the one query
            label = "step"
        else:
            label = ""
            if batch is not None:
                done, total = job.offset + done, batch.total
        self.progress.setFormat("%v/%m")
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status_label.setText(f"Locating\u2026 {label + ' ' if label else ''}{done}/{total}")

    @QtCore.Slot(int, object)
    def _job_finished(self, job_id: int, result: JobResult) -> None:
        job = self.jobs.pop(job_id, None)
        if not self._closing:
            if result.kind == "load":
                self._model_loaded(result)
            else:
                if job is not None and job.is_cancelled():
                    result.cancelled = True
                    if result.kind == "text":  # a cancelled query draws nothing, even if it finished meanwhile
                        result.predictions = []
                self._predictions_done(result, getattr(job, "batch", None) or Batch(result.kind, 0, 1))
        self._update_busy()
        if not self.jobs:
            self.idle.emit()

    def _model_loaded(self, result: JobResult) -> None:
        if result.error:
            self.settings_panel.set_model_info(None, result.error)
            self.messages.add(f"Could not load the model: {result.error}", error=True)
            self.status_label.setText("No model loaded")
            return
        self.settings_panel.set_model_info(result.model_info)
        name = Path(str(result.model_info.get("checkpoint", ""))).name or "model"
        calibration = result.model_info.get("calibration")
        regions = f"; credible regions calibrated: {calibration}" if calibration and calibration != "raw" else ""
        reads = result.model_info.get("reads")
        takes = f"; reads {' and '.join('photos' if r == 'image' else r for r in reads)}" if reads else ""
        self.messages.add(f"Model loaded: {name} ({result.elapsed_s:.1f} s){regions}{takes}")
        self.status_label.setText("Ready")

    def _predictions_done(self, result: JobResult, batch: Batch) -> None:
        first_new = len(self.session)
        for vp in result.predictions:
            self.session.append(vp)
            self.result_panel.add_session_item(vp)
        for f in result.failures:
            name = Path(f.item).name if result.kind == "images" else f.item[:60]
            self.messages.add(f"{name}: {f.reason}", error=True)
        if result.predictions:
            self._save_history(result.predictions)
            if not batch.shown:  # show the batch's first result; later ones wait in the session list
                batch.shown = True
                self.show_index(first_new)
        batch.ok += len(result.predictions)
        batch.failed += len(result.failures)
        batch.cancelled |= result.cancelled
        if result.error and not result.failures and result.error not in batch.errors:
            batch.errors.append(result.error)
        batch.jobs_left -= 1
        if batch.jobs_left > 0:
            return
        elapsed = time.perf_counter() - batch.t0
        if batch.cancelled:
            msg = (f"{batch.label}: cancelled" if batch.kind == "text"
                   else f"Cancelled: {batch.ok} of {batch.total} photos done, the rest cancelled")
            self.messages.add(msg)
            if not batch.shown:
                self._set_banner(msg)
        elif batch.errors:
            msg = batch.errors[0]
            self.messages.add(msg, error=True)
            self._set_banner(msg)
        else:
            noun = "photo" if batch.kind == "images" else "text"
            msg = f"Located {batch.ok} of {batch.total} {noun}{'s' if batch.total != 1 else ''} in {elapsed:.1f} s"
            if batch.failed:
                msg += f" ({batch.failed} failed)"
        self.status_label.setText(msg)

    def cancel(self) -> None:
        pending = [j for j in self.jobs.values() if j.kind != "load" and not j.is_cancelled()]
        for j in pending:
            j.cancel()
        if pending:
            self.status_label.setText("Cancelling\u2026")

    def busy(self) -> bool:
        return bool(self.jobs)

    def wait_idle(self, timeout_ms: int = 30000) -> bool:
        """Process events until no job is pending (for scripts and tests)."""
        timer = QtCore.QElapsedTimer()
        timer.start()
        while self.jobs and timer.elapsed() < timeout_ms:
            QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 20)
            QtCore.QThread.msleep(2)
        return not self.jobs
