"""Typed model options: each option's default and the type its values are converted to.

A value reaches a model from Python (``build_model(..., norm_eps=1e-6)``), from a YAML config or
from ``--model-option NAME=VALUE`` on a command line, where YAML 1.1 reads ``1e-6`` as a string.
``Option.convert`` turns each of these into the option's type, or refuses it naming the type it
expected, so a wrong value stops before a model (or a Ray job) starts.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
"""The words a boolean option reads, in any case (YAML 1.1's)."""


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise ValueError


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _to_int_list(value: Any) -> list[int] | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null")):
        return None
    if not isinstance(value, (list, tuple)):
        raise ValueError
    return [_to_int(item) for item in value]


def _to_path(value: Any) -> str | os.PathLike[str] | None:
    if value is None or isinstance(value, (str, os.PathLike)):
        return value
    raise ValueError


KINDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "bool": ("true or false", _to_bool),
    "int": ("an integer", _to_int),
    "float": ("a number", _to_float),
    "str": ("a string", _to_str),
    "int_list": ("a list of integers like [0, 2] or none", _to_int_list),
    "path": ("a file path", _to_path),
}
"""Each option kind: how a message names it, and the conversion (``ValueError`` when it cannot)."""


@dataclass(frozen=True)
class Option:
    """One model option.

    Attributes:
        default: the value a model is built with when the option is not given (or given as None).
        kind: a key of ``KINDS``: bool, int, float, str, int_list (None or a list of ints), path.
        choices: the values a ``str`` option may take (empty: any string).
    """

    default: Any
    kind: str
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Option: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")

    def expected(self) -> str:
        """The values the option takes, as a message names them ("a number", "one of add, token")."""
        return f"one of {', '.join(self.choices)}" if self.choices else KINDS[self.kind][0]

    def convert(self, value: Any) -> Any:
        """``value`` as the option's type (``"1e-6"`` -> 1e-6 for a float option).

        Raises:
            ValueError: "expected <type>, got <value>".
        """
        refusal = ValueError(f"expected {self.expected()}, got {value!r}")
        try:
            converted = KINDS[self.kind][1](value)
        except (ValueError, TypeError):
            raise refusal from None
        if self.choices and converted not in self.choices:
            raise refusal
        return converted


def with_defaults(options: Mapping[str, Option], **defaults: Any) -> dict[str, Option]:
    """``options`` with some defaults replaced (the kinds and choices stay)."""
    unknown = sorted(set(defaults) - set(options))
    if unknown:
        raise ValueError(f"with_defaults: no option(s) {', '.join(unknown)}")
    return {
        name: dataclasses.replace(option, default=defaults[name]) if name in defaults else option
        for name, option in options.items()
    }


def resolve_options(model: str, options: Mapping[str, Option], given: Mapping[str, Any]) -> dict[str, Any]:
    """Every option of ``model``: the given ones converted to their kinds, the defaults for the rest
    (an option given as None takes its default).

    Raises:
        ValueError: an unknown option (listing the valid ones) or a value of the wrong type, naming
            ``model``, the option and the type expected.
    """
    unknown = sorted(set(given) - set(options))
    if unknown:
        raise ValueError(
            f"{model}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(sorted(options))}"
        )
    settings = {}
    for name, option in options.items():
        value = given.get(name)
        if value is None:
            settings[name] = option.default
            continue
        try:
            settings[name] = option.convert(value)
        except ValueError as error:
            raise ValueError(f"{model}: option {name}: {error}") from None
    return settings
