"""One ``SamplingSettings`` value, one source per choice list (issue #14).

The ``[eval]`` table of a run config and a study's settings keep their flat vocabulary (``samples``,
``sampler``, ``sampler_steps``, ``reducer``, ``projection``: the TOML users write and every saved
``config.json``); ``.sampling()`` is the one conversion to :class:`SamplingSettings`, which evaluation,
prediction, the studies and the app sample with. These tests keep the two from drifting apart and the
saved format readable.
"""

from __future__ import annotations

import argparse
import json

import attrs
import pytest

from locdiff.config import VIEWS, EvalConfig, RunConfig
from locdiff.core.diffusion import DEFAULT_PROJECTION, PROJECTIONS, SAMPLERS
from locdiff.core.reduction import REDUCERS
from locdiff.core.sampling import PredictSettings, SamplingSettings, parse_samplers
from locdiff.core.splits import EVAL_SPLITS
from locdiff.services.studies.settings import StudySettings

#: the [eval] keys that are sampling choices, and the SamplingSettings field each one sets
FLAT = {"samples": "samples", "sampler": "sampler", "sampler_steps": "steps", "reducer": "reducer", "projection": "projection"}

#: the config.json of a run written before issue #14 (flat [eval] keys, no later settings): must still load
OLD_CONFIG_JSON = """{"data": {"all_places": false, "clip_model": "ViT-L-14", "clip_pretrained": "openai", "embedder": "minilm",
 "holdout_groups": [], "holdout_lat_band": null, "places_limit": 16000, "source": "places",
 "template": "{name}, {admin1}, {country}", "test_fraction": 0.1, "val_fraction": 0.05},
 "device": "auto", "diffusion": {"anchors_per_batch": 2048, "loss": "kl", "schedule": "cosine", "steps": 100},
 "eval": {"max_items": 600, "projection": "snap", "reducer": "mode", "sampler": "ddim", "sampler_steps": 20, "samples": 16},
 "model": {"degree": 15, "dropout": 0.1, "siren_w0": 1.0, "time_dim": 200, "widths": [512, 256, 128]},
 "name": "places", "store_url": null,
 "train": {"batch_size": 512, "betas": [0.9, 0.99], "checkpoint_every": 250, "keep_checkpoints": 3, "log_every": 50,
 "lr": 0.001, "seed": 0, "steps": 1500, "weight_decay": 0.0005}, "workdir": "runs"}"""


def test_the_flat_keys_cover_every_sampling_choice_but_the_seed():
    sampling_fields = {f.name for f in attrs.fields(SamplingSettings)}
    assert set(FLAT.values()) == sampling_fields - {"seed"}  # the seed is the command's (--seed), not the file's
    assert set(FLAT) <= {f.name for f in attrs.fields(EvalConfig)}
    assert set(FLAT) - {"reducer"} <= {f.name for f in attrs.fields(StudySettings)}  # studies choose reducers per table


def test_the_defaults_are_the_sampling_defaults():
    assert EvalConfig().sampling(seed=0) == SamplingSettings()
    assert StudySettings().sampling() == SamplingSettings()
    assert PredictSettings().sampling == SamplingSettings(seed=None)  # the app draws unseeded unless a seed is set
    assert SamplingSettings().projection == DEFAULT_PROJECTION


@pytest.mark.parametrize("key, value", [("samples", 48), ("sampler", "ddpm"), ("sampler_steps", 100), ("reducer", "medoid"),
                                        ("projection", "none")])
def test_each_flat_key_sets_its_sampling_field(key, value):
    config = RunConfig.from_dict({"eval": {key: value}})
    sampling = config.eval.sampling(seed=7)
    assert getattr(sampling, FLAT[key]) == value and sampling.seed == 7
    assert sampling == SamplingSettings(seed=7).replace(**{FLAT[key]: value})
    if key != "reducer":
        study = StudySettings(**{key: value}, seed=3)
        assert getattr(study.sampling(), FLAT[key]) == value and study.sampling().seed == 3


@pytest.mark.parametrize("key, bad", [("sampler", "euler"), ("reducer", "mean"), ("projection", "sphere"), ("samples", 0),
                                      ("sampler_steps", 0), ("samples", True), ("sampler", 3)])
def test_the_file_refuses_what_the_value_refuses(key, bad):
    with pytest.raises(ValueError, match=rf"^my\.toml: eval\.{key}: ") as err:
        RunConfig.from_dict({"eval": {key: bad}}, where="my.toml")
    assert "\n" not in str(err.value) and "Attribute(" not in str(err.value) and len(str(err.value)) < 200  # one clear line
    with pytest.raises((ValueError, TypeError)):
        SamplingSettings(**{FLAT[key]: bad})


@pytest.mark.parametrize("field, choices", [("sampler", SAMPLERS), ("projection", PROJECTIONS), ("reducer", REDUCERS)])
def test_every_choice_is_accepted_by_the_file_and_the_value(field, choices):
    for choice in choices:
        key = next(k for k, v in FLAT.items() if v == field)
        assert getattr(RunConfig.from_dict({"eval": {key: choice}}).eval.sampling(), field) == choice
        assert getattr(SamplingSettings(**{field: choice}), field) == choice


def test_an_old_run_config_still_loads_and_saves_flat():
    old = json.loads(OLD_CONFIG_JSON)
    config = RunConfig.from_dict(old, where="runs/run-0001/config.json")
    assert config.eval.sampling(seed=0) == SamplingSettings(sampler="ddim", steps=20, projection="snap", samples=16, reducer="mode")
    saved = config.to_dict()
    assert saved["eval"] == {**old["eval"], "scores": True, "one_step": True}  # the same flat keys, plus later defaults
    assert "sampling" not in saved["eval"]
    assert RunConfig.from_dict(json.loads(json.dumps(saved))) == config  # what a run saves reads back the same


def test_predict_settings_take_flat_choices_into_their_one_sampling_value():
    settings = PredictSettings(samples=48, sampler="ddpm", steps=100, grid_lat=90)
    assert settings.sampling == SamplingSettings(sampler="ddpm", steps=100, samples=48, seed=None)
    assert (settings.samples, settings.sampler, settings.steps, settings.grid_lat) == (48, "ddpm", 100, 90)
    with pytest.raises(ValueError):
        PredictSettings(reducer="mean")
    assert parse_samplers("ddpm:100,ddim") == [("ddpm", 100), ("ddim", 20)]
    with pytest.raises(ValueError, match="euler"):
        parse_samplers("euler:5")


def _choices(parser: argparse.ArgumentParser, command: str) -> dict[str, tuple]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return {opt: tuple(a.choices) for a in sub._actions if a.choices is not None for opt in a.option_strings}


def test_the_cli_offers_each_list_from_its_one_source():
    from locdiff.cli.main import build_parser

    parser = build_parser()
    ev, predict, gui = _choices(parser, "eval"), _choices(parser, "predict"), _choices(parser, "gui")
    assert ev["--reducer"] == REDUCERS and ev["--projection"] == PROJECTIONS and ev["--split"] == EVAL_SPLITS
    assert predict["--sampler"] == SAMPLERS and predict["--reducer"] == REDUCERS
    assert gui["--view"] == VIEWS
