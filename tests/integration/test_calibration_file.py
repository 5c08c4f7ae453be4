"""The fitted calibration saved beside a model's checkpoints, and read back for predictions."""

from __future__ import annotations

import json

import pytest

from adapters.calibration_file import FILE_NAME, load_calibration, run_folder, save_calibration
from locdiff.core.calibration import Calibrator


def test_round_trip_in_the_run_folder(tmp_path):
    ckpt = tmp_path / "run-0001" / "checkpoints" / "step-00000040"
    ckpt.mkdir(parents=True)
    assert run_folder(ckpt) == tmp_path / "run-0001"
    assert load_calibration(ckpt) is None  # nothing fitted yet: raw maps
    cal = Calibrator("sample-temperature", 1.5, scores=(0.2, 0.9, 0.5))
    path = save_calibration(ckpt, cal)
    assert path == tmp_path / "run-0001" / FILE_NAME
    assert [p.name for p in path.parent.iterdir() if p.is_file()] == [FILE_NAME]  # no temp file left
    assert load_calibration(ckpt) == cal


def test_a_calibration_for_another_checkpoint_is_not_applied(tmp_path):
    old = tmp_path / "run" / "checkpoints" / "step-00000010"
    new = tmp_path / "run" / "checkpoints" / "step-00000020"
    old.mkdir(parents=True)
    new.mkdir()
    save_calibration(old, Calibrator())
    with pytest.warns(UserWarning, match="fitted for checkpoint 'step-00000010', not 'step-00000020'"):
        assert load_calibration(new) is None


@pytest.mark.parametrize("content,match", [
    ("{not json", "not a readable calibration file"),
    (json.dumps({"format": 7}), "field 'format' must be 1"),
    (json.dumps({"format": 1, "checkpoint": "step-1", "calibrator": {"param": -1}}), r"field 'calibrator'.*param"),
])
def test_bad_files_name_the_file_and_the_field(tmp_path, content, match):
    ckpt = tmp_path / "run" / "checkpoints" / "step-1"
    ckpt.mkdir(parents=True)
    (tmp_path / "run" / FILE_NAME).write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_calibration(ckpt)
    assert str(tmp_path / "run" / FILE_NAME) in str(err.value)
