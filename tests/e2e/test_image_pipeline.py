"""The image path end to end on CPU: a tiny local open_clip checkpoint, a model trained on a small
image CSV through the CLI, then ``predict photo.jpg`` returning locations with probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("open_clip")

from locdiff.cli import main  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"

def test_predict_photo_returns_locations_with_probabilities(trained_run, capsys):
    root, run_dir = trained_run
    capsys.readouterr()
    photo = PHOTOS / "beijing-forbidden-city.jpg"
    code = main(["predict", str(run_dir), str(photo), "--json", "--samples", "4", "--sampler-steps", "5",
                 "--workdir", str(root / "runs")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    (result,) = out
    assert result["item"] == str(photo)
    assert -90 <= result["point"]["lat"] <= 90 and -180 <= result["point"]["lon"] <= 180
    probs = [m["probability"] for m in result["modes"]]
    assert probs and all(0 < p <= 1 for p in probs) and sum(probs) <= 1 + 1e-6
    assert probs == sorted(probs, reverse=True)


def test_predict_reports_a_corrupt_photo_and_keeps_going(trained_run, capsys):
    root, run_dir = trained_run
    corrupt = PHOTOS.parent / "corrupt" / "truncated_jpeg.jpg"
    good = PHOTOS / "list-sylt-starfish.jpg"
    capsys.readouterr()
    code = main(["predict", str(run_dir), str(corrupt), str(good), "--json", "--samples", "2", "--sampler-steps", "3",
                 "--workdir", str(root / "runs")])
    out = json.loads(capsys.readouterr().out)
    assert code == 0  # JSON mode reports per-item errors in the payload
    assert "error" in out[0] and "truncated" in out[0]["error"].lower()
    assert "point" in out[1]


def test_checkpoint_refuses_another_embedder(trained_run, tmp_path):
    from tests.support.tiny_clip import save_tiny_test_model
    from locdiff.container import build_prediction_service, load_model

    root, run_dir = trained_run
    bundle, _ = load_model(run_dir)
    assert bundle.config.data.embedder == "clip" and bundle.degree == 7
    other = save_tiny_test_model(tmp_path / "other_clip", seed=1)
    from adapters.clip_embedder import OpenClipEmbedder
    from locdiff.services.prediction import PredictionService

    with pytest.raises(ValueError, match="trained on embeddings from"):
        PredictionService(bundle, OpenClipEmbedder("tiny", other, progress=False), bundle.net.parameters().__next__().device)
    assert build_prediction_service(run_dir, workdir=str(root / "runs")).model_info["degree"] == 7


def test_a_saved_calibration_widens_the_credible_regions_of_predictions(trained_run, capsys):
    from locdiff.core.calibration import Calibrator
    from locdiff.container import load_model, save_calibration

    root, run_dir = trained_run
    photo = PHOTOS / "beijing-forbidden-city.jpg"
    args = ["predict", str(run_dir), str(photo), "--json", "--samples", "4", "--sampler-steps", "5", "--workdir", str(root / "runs")]

    def regions():
        capsys.readouterr()
        assert main(args) == 0
        (result,) = json.loads(capsys.readouterr().out)
        return result["calibration"], {c["level"]: c["area_km2"] for c in result["credible_regions"]}

    label, raw = regions()
    assert label == "raw" and set(raw) == {0.5, 0.9, 0.95} and raw[0.5] <= raw[0.9] <= raw[0.95]
    _, ckpt = load_model(run_dir)
    # validation said: truths sit far out in the maps (HPD levels near 1), so every region must grow
    path = save_calibration(ckpt, Calibrator("sample-temperature", 1.0, n_lat=90, n_lon=180, scores=[0.97 + 0.0002 * i for i in range(100)]))
    try:
        label, cal = regions()
        assert "conformal levels (n=100)" in label
        assert cal[0.5] > raw[0.5] and cal[0.9] > raw[0.9]
    finally:
        path.unlink()


def test_a_calibrated_map_lists_no_empty_modes(trained_run, capsys, monkeypatch):
    """On a calibrated map, modes after the first that hold < MIN_MODE_MASS (minor peaks of single samples, printed as
    p = 0.000) are not listed; the best mode always is."""
    import attrs

    from locdiff.core.calibration import Calibrator
    from locdiff.container import load_model, save_calibration
    from locdiff.services import prediction

    root, run_dir = trained_run
    real = prediction.find_modes

    def with_empty_peaks(*a, **kw):
        found = real(*a, **kw)
        return (found[0], attrs.evolve(found[0], mass=0.0), attrs.evolve(found[0], mass=0.2), attrs.evolve(found[0], mass=2e-4))

    monkeypatch.setattr(prediction, "find_modes", with_empty_peaks)
    _, ckpt = load_model(run_dir)
    path = save_calibration(ckpt, Calibrator("mixture-temperature", 0.5, n_lat=90, n_lon=180, scores=[0.5 + 0.004 * i for i in range(100)]))
    try:
        capsys.readouterr()
        assert main(["predict", str(run_dir), str(PHOTOS / "beijing-forbidden-city.jpg"), "--json", "--samples", "4",
                     "--sampler-steps", "5", "--workdir", str(root / "runs")]) == 0
        (result,) = json.loads(capsys.readouterr().out)
    finally:
        path.unlink()
    masses = [m["probability"] for m in result["modes"]]
    assert len(masses) == 2 and masses[1] == 0.2 and prediction.MIN_MODE_MASS > 2e-4
