"""The model table (tin.models.build.MODELS) and typed options (tin.models.options): the documented
parameter counts against the built models, one kind per option name, and the conversions of
values from Python, YAML and the command line."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tin.models.build import (
    MODEL_NAMES,
    MODELS,
    build_model,
    model_family,
    model_option_defaults,
    model_options,
    option_defaults,
    option_spec,
)
from tin.models.options import Option, resolve_options, with_defaults
from tin.models.summary import main as summary_main


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_the_documented_parameter_count_is_the_built_models(name):
    entry = MODELS[name]
    with torch.device("meta"):  # no memory, no time: only the shapes are built
        model = build_model(name, *entry.counted_at[:2], image_size=entry.counted_at.image_size)
    assert sum(parameter.numel() for parameter in model.parameters()) == entry.parameters


def test_every_name_is_once_in_the_table_with_its_family_and_options():
    assert len(MODEL_NAMES) == len(set(MODEL_NAMES)) == 14
    assert [model_family(name) for name in ("tin_r50", "tsm_r18", "tsn_r101", "stam_b16", "ila_tiny")] == [
        "resnet",
        "resnet",
        "resnet",
        "stam",
        "ila",
    ]
    assert model_option_defaults("tin_r18") == {
        "shift_div": 4,
        "groups": 2,
        "reverse": True,
        "offset_scale": 4.0,
        "dropout": 0.5,
        "pretrained": None,
        "partial_bn": False,
    }
    assert model_option_defaults("tsm_r50")["shift_div"] == 8 and "shift_div" not in model_options("tsn_r50")
    assert option_defaults("temporal_depth") == {6: ["stam_b16"], 2: ["stam_tiny"]}
    with pytest.raises(ValueError, match="unknown model 'tin_r34'; valid names: tin_r18"):
        model_family("tin_r34")


def test_an_option_has_one_kind_and_its_defaults_are_of_it():
    for name, entry in MODELS.items():
        for option, spec in entry.options.items():
            assert spec.default is None or spec.convert(spec.default) == spec.default, (name, option)
            if option != "input_norm":  # each family has its own normalisations
                assert option_spec(option) == dataclasses.replace(spec, default=option_spec(option).default)
    assert option_spec("fusion").choices == ("add", "token")
    assert option_spec("aggregation").choices == ("transformer", "mean")
    with pytest.raises(ValueError, match="'input_norm' differs between models"):
        option_spec("input_norm")
    with pytest.raises(KeyError, match="no model has an option 'width'"):
        option_spec("width")


@pytest.mark.parametrize(
    "option, value, converted",
    [
        (Option(1e-5, "float"), "1e-6", 1e-6),  # YAML 1.1 reads 1e-6 as a string
        (Option(1e-5, "float"), 1, 1.0),
        (Option(2, "int"), "3", 3),
        (Option(True, "bool"), "off", False),
        (Option(True, "bool"), False, False),
        (Option(None, "int_list"), [8, 9], [8, 9]),
        (Option(None, "int_list"), (), []),
        (Option(None, "int_list"), "none", None),
        (Option("add", "str", ("add", "token")), "token", "token"),
        (Option(None, "path"), "w.pth", "w.pth"),
    ],
)
def test_values_convert_to_the_options_kind(option, value, converted):
    result = option.convert(value)
    assert result == converted and type(result) is type(converted)


@pytest.mark.parametrize(
    "option, value, message",
    [
        (Option(1e-5, "float"), "abc", "expected a number, got 'abc'"),
        (Option(1e-5, "float"), True, "expected a number, got True"),
        (Option(1e-5, "float"), "nan", "expected a number, got 'nan'"),
        (Option(2, "int"), 2.5, "expected an integer, got 2.5"),
        (Option(2, "int"), "2.0", "expected an integer, got '2.0'"),
        (Option(True, "bool"), 1, "expected true or false, got 1"),
        (Option(None, "int_list"), [1, "a"], r"expected a list of integers like \[0, 2\] or none"),
        (Option("add", "str", ("add", "token")), "concat", "expected one of add, token, got 'concat'"),
        (Option(None, "path"), 3, "expected a file path, got 3"),
    ],
)
def test_values_of_another_kind_are_refused_naming_the_kind(option, value, message):
    with pytest.raises(ValueError, match=message):
        option.convert(value)


def test_resolving_options_fills_defaults_and_names_the_model_and_option():
    options = {"eps": Option(1e-5, "float"), "depth": Option(2, "int")}
    assert resolve_options("m", options, {"eps": "1e-6", "depth": None}) == {"eps": 1e-6, "depth": 2}
    with pytest.raises(ValueError, match="m: option depth: expected an integer, got 'two'"):
        resolve_options("m", options, {"depth": "two"})
    with pytest.raises(ValueError, match=r"m: unknown option.* width; valid options: depth, eps"):
        resolve_options("m", options, {"width": 3})
    assert with_defaults(options, depth=4)["depth"] == Option(4, "int")
    with pytest.raises(ValueError, match=r"no option.* width"):
        with_defaults(options, width=3)


def test_build_model_converts_option_values_to_their_kinds():
    model = build_model("stam_tiny", 3, 8, image_size=32, norm_eps="1e-6", temporal_depth="1")
    assert model.norm_eps == 1e-6 and isinstance(model.norm_eps, float) and len(model.temporal.encoder.layers) == 1
    with pytest.raises(ValueError, match="stam_tiny: option norm_eps: expected a number, got 'abc'"):
        build_model("stam_tiny", 3, 8, image_size=32, norm_eps="abc")
    tin = build_model("tin_r18", 3, 4, offset_scale=2, reverse="false")
    interlace = next(module for module in tin.modules() if type(module).__name__ == "TemporalInterlace")
    assert interlace.offset_scale == 2.0 and interlace.reverse is False


def test_summary_lists_each_option_with_its_default_and_kind(capsys):
    summary_main(["stam_tiny", "--options"])
    shown = capsys.readouterr().out
    assert "norm_eps=1e-05 (a number)" in shown and "aggregation='transformer' (one of transformer, mean)" in shown
