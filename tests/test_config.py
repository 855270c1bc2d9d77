"""One validated, versioned configuration: build_config is the one mapping (API, CLI, widget),
the schema version migrates old files and refuses newer ones, and plan_training tells the GUI
exactly what the Trainer will do."""

import pytest

from napari_b2u import api
from napari_b2u.config import CONFIG_VERSION, FIELDS, TrainConfig, build_config
from napari_b2u.data import Layout
from napari_b2u.errors import InputError
from napari_b2u.train.plan import plan_training

from .conftest import TINY_T


def test_options_go_to_the_config_or_to_the_method():
    cfg = build_config("b2u", steps=10, cells=4, lambda_end=8.0, lr=None)
    assert cfg.steps == 10 and cfg.lr is None  # None: the device preset decides
    assert cfg.method_params["cells"] == 4 and cfg.method_params["lambda_end"] == 8.0
    with pytest.raises(InputError, match="unknown option 'grid' for method 'b2u'"):
        build_config("b2u", grid=4)  # an N2V parameter
    assert build_config("n2v", grid=4).method_params == {"grid": 4, "mask": "auto"}
    with pytest.raises(InputError, match="unknown method"):
        build_config("noise2nothing")


@pytest.mark.parametrize("option,value,words", [
    ("steps", 0, "steps=0 is not allowed: it must be an integer >= 1"),
    ("steps", 10**12, "<= 100,000,000"),
    ("max_time", float("nan"), "max_time=nan"),
    ("max_time", float("inf"), "max_time=inf"),
    ("epochs", float("inf"), "epochs=inf"),
    ("width", 0, "width=0"),
    ("width", -2, "width=-2"),
    ("lr", 0, "lr=0 is not allowed: it must be a number > 0"),
    ("batch_size", 10**6, "batch_size=1000000"),
    ("cells", 0, "cells=0"),
    ("cells", 1000, "cells=1000"),
    ("cells", 40, "cells=40"),
    ("val_fraction", 1.0, "val_fraction=1.0"),
    ("compile", "maybe", "compile='maybe'"),
    ("seed", 1.5, "seed=1.5"),
])
def test_every_value_is_checked_with_one_message(option, value, words):
    with pytest.raises(InputError) as exc:
        build_config("b2u", **{option: value})
    assert words in str(exc.value)


def test_the_config_round_trips_with_its_version():
    cfg = build_config("b2u", steps=7, cells=3, seed=5)
    d = cfg.to_dict()
    assert d["version"] == CONFIG_VERSION
    again = TrainConfig.from_dict(d)
    assert again == cfg


def test_old_configs_migrate_and_newer_ones_are_refused():
    d = build_config("b2u", steps=7).to_dict()
    v1 = {k: v for k, v in d.items() if k not in ("version", "preview_seconds")}
    old = TrainConfig.from_dict(v1)  # an unversioned 0.1 file
    assert old.steps == 7 and old.preview_seconds == 0.0  # 0.1 previewed by steps only
    with pytest.raises(InputError, match="newer napari-b2u"):
        TrainConfig.from_dict({**d, "version": CONFIG_VERSION + 1})
    with pytest.raises(InputError, match="unknown training settings renamed_field"):
        TrainConfig.from_dict({**d, "renamed_field": 1})
    with pytest.raises(InputError, match="not a whole number"):
        TrainConfig.from_dict({**d, "version": "2"})


def test_every_field_has_a_spec_and_every_spec_a_field():
    from dataclasses import fields

    names = {f.name for f in fields(TrainConfig)} - {"method_params"}
    assert names == set(FIELDS)
    for spec in FIELDS.values():
        assert spec.help, spec.name


def test_resume_refuses_changed_settings_but_takes_runtime_ones(small_stack, tmp_path):
    noisy, _ = small_stack
    ck = tmp_path / "ck.b2u"
    api.train_stack(noisy, steps=2, autosave=str(ck), autosave_every=1e9, cells=2, **{
        k: v for k, v in TINY_T.items()}, progress=False)
    same = {k: v for k, v in TINY_T.items() if k != "compile"}
    t = api.make_trainer(noisy, resume=str(ck), steps=3, compile=False, cells=2, **same)
    assert t.step == 2 and t.config.steps == 3
    with pytest.raises(InputError, match="lr=0.5 was given, the checkpoint has"):
        api.make_trainer(noisy, resume=str(ck), lr=0.5, **same)
    with pytest.raises(InputError, match="cells=4 was given"):
        api.make_trainer(noisy, resume=str(ck), cells=4, **same)


@pytest.mark.parametrize("shape,axes,options", [
    ((8, 64, 64), "TYX", dict(epochs=1.5)),  # frames held out
    ((3, 50, 70), "TYX", dict(epochs=2.0)),  # a band held out, patch shrinks
    ((1, 64, 64), "TYX", dict(epochs=1.0, val_fraction=0.0)),
    ((2, 40, 40), "CYX", dict(steps=5)),
])
def test_plan_training_is_what_the_trainer_does(shape, axes, options):
    import numpy as np

    arr = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
    cfg = build_config("b2u", width=16, depth=2, patch_size=48, batch_size=4, **options)
    plan = plan_training(Layout(axes, shape), cfg, "cpu")
    trainer = api.make_trainer(arr, axes=axes, device="cpu", width=16, depth=2, patch_size=48,
                               batch_size=4, **options)
    assert plan.steps == trainer.config.steps
    assert plan.patch_size == trainer.patch_size
    assert trainer.data.split.startswith(plan.split)
