"""Job settings as dataclasses: one declaration gives the flags, the YAML config file and the checks.

A job's config is a dataclass whose fields are declared with ``setting``: the default, the help
text and, where a field needs them, its choices, flag name, text parser, or that only the program
sets it. From that one declaration:

    parse_config(TrainConfig, argv, defaults=RECIPE)   flags and --config FILE.yaml -> a validated config
    add_config_flags(parser, TrainConfig, RECIPE)      one flag per field (--batch-size for batch_size)
    config_from_args(TrainConfig, args, RECIPE)        the config back from the parsed flags
    check_choices(config)                              each field with choices holds one of them
    to_flat(config) / from_flat(TrainConfig, values)   the config as {flag name: value} and back
    from_record(TrainConfig, values)                   a config from a recorded dict, nested or flat

Precedence: the dataclass's defaults < ``defaults`` (a job's recipe: a mapping shaped like a config
file) < the ``--config`` file < the flags given on the command line. A field whose type is a
dataclass (``TrainConfig.optimization``, ``SearchConfig.train``) nests: its fields are flags of
their own names, and a section of their own in the file (``optimization: {lr: 0.01}``). The file's
keys are field names; an unknown key, or a value of the wrong type, is a ``UsageError`` naming the
file and the key, and a key that belongs in a section (``lr`` at the top of a training config file)
names the section. After building, the config's ``validate()`` (where it has one) checks the
values, so a bad value reads the same whether it came from a flag, the file or a recipe.

Flag names are unique over all sections, so a config is also a flat mapping of flag names with
underscores to values (``{"data": ROOT, "lr": 0.01}``: ``--data`` sets ``data.root``): MLflow
params, search trials' dimensions and records written before a config had sections use it.

``exits_on_usage_error`` wraps a job's ``main``: a ``UsageError`` becomes ``error: <message>`` on
stderr and the exit status ``USAGE_EXIT_STATUS``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tin.errors import USAGE_EXIT_STATUS, UsageError

T = TypeVar("T")
CONFIG_FLAG = "--config"


def setting(
    default: Any = MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = MISSING,
    choices: Sequence[Any] | None = None,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    internal: bool = False,
    exclude: Sequence[str] = (),
    positional: bool = False,
    unset: str | None = None,
) -> Any:
    """A dataclass field that carries what its flag and config-file key need.

    Args:
        default, default_factory: as for ``dataclasses.field``; a field with neither is required.
        help: what the setting does, for ``--help``; the default is appended there from the field's
            (or the job's) default value, so no help text states one.
        choices: the allowed values (of each item, for a tuple); ``check_choices`` enforces them.
        flag: the flag's name when it is not ``--`` + the field name with dashes.
        parse: turns a flag's text (or a string in the config file) into the value, e.g. "86:87"
            into (86, 87); raises ``ValueError`` or ``argparse.ArgumentTypeError``.
        metavar: the flag's placeholder in ``--help``.
        internal: only the program sets it (credentials from the environment, a search's parent
            run): no flag and no config-file key.
        exclude: for a nested dataclass, its fields that the outer config fills in itself (no flag,
            no key).
        positional: a positional argument (``VIDEO...`` for a tuple) instead of a flag.
        unset: what the program does when the value is None or empty (the default of a setting that some
            other fact decides, e.g. "all CPUs"); ``--help`` shows it as the default.
    """
    metadata = {
        "help": help,
        "choices": tuple(choices) if choices is not None else None,
        "flag": flag,
        "parse": parse,
        "metavar": metavar,
        "internal": internal,
        "exclude": tuple(exclude),
        "positional": positional,
        "unset": unset,
    }
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


def by_value(named_values: Iterable[tuple[str, Any]]) -> str:
    """How an ``unset`` text states a default that something else decides (the model, the dataset
    format): "X for a, b; Y for c", the names grouped by their value, in the order first seen."""
    groups: dict[str, list[str]] = {}
    for name, value in named_values:
        groups.setdefault(_shown(value), []).append(name)
    return "; ".join(f"{value} for {', '.join(names)}" for value, names in groups.items())


def flag_name(field: Field) -> str:
    """How messages name a field on the command line: its flag (``--batch-size`` for ``batch_size``
    unless it names its own), or for a positional argument its placeholder (``VIDEO``)."""
    if field.metadata.get("positional"):
        return _metavar(field)
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _metavar(field: Field) -> str:
    """A field's placeholder in --help: its own, its choices (``{cosine,step}``) or its name in capitals."""
    choices = field.metadata.get("choices")
    if field.metadata.get("metavar"):
        return field.metadata["metavar"]
    return "{" + ",".join(map(str, choices)) + "}" if choices else field.name.upper()


def check_choices(config: Any, error: type[UsageError] = UsageError) -> None:
    """Raise ``error`` naming the flag when a field with choices (in ``config`` or a nested config)
    holds another value. None passes: it means unset (a model default, a searched dimension)."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            check_choices(value, error)
            continue
        choices = field.metadata.get("choices")
        if choices is None or value is None:
            continue
        for item in value if isinstance(value, tuple) else (value,):
            if item not in choices:
                raise error(f"{flag_name(field)} must be one of {', '.join(map(str, choices))}, got {item!r}")


def exits_on_usage_error(main: Callable[..., int]) -> Callable[..., int]:
    """Decorate a job's ``main``: a ``UsageError`` (the user's to fix; its message names the flag or
    file) is printed as ``error: <message>`` on stderr and returned as ``USAGE_EXIT_STATUS``, so
    every job reports bad input the same way. Anything else is a bug and keeps its traceback."""

    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return main(*args, **kwargs)
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return USAGE_EXIT_STATUS

    return run


# ---- flags -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Option:
    """A settable leaf field of a config: its path from the top config, its type, and the nested
    fields (sections) on the way to it."""

    path: tuple[str, ...]
    field: Field
    kind: Any
    sections: tuple[Field, ...]

    @property
    def dest(self) -> str:
        return ".".join(self.path)

    @property
    def flat_key(self) -> str:
        """Its name in a flat mapping: the flag's name with underscores (``data`` for ``--data``,
        which sets ``data.root``), or the field's name for a positional argument."""
        if self.field.metadata.get("positional"):
            return self.field.name
        return flag_name(self.field).removeprefix("--").replace("-", "_")


def _nested(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _settable(field: Field, exclude: Sequence[str]) -> bool:
    return not field.metadata.get("internal") and field.name not in exclude


def _options(
    cls: type, exclude: Sequence[str] = (), path: tuple[str, ...] = (), sections: tuple[Field, ...] = ()
) -> Iterator[_Option]:
    """Every settable leaf field of ``cls``, nested dataclasses expanded."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not _settable(field, exclude):
            continue
        kind = hints[field.name]
        if _nested(kind):
            yield from _options(kind, field.metadata.get("exclude", ()), (*path, field.name), (*sections, field))
        else:
            yield _Option((*path, field.name), field, kind, sections)


def _optional(kind: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(kind) if member is not type(None)]
        return members[0], len(members) < len(typing.get_args(kind))
    return kind, False


def _items(kind: Any) -> Any | None:
    """The item type of ``tuple[X, ...]``; None for any other type."""
    arguments = typing.get_args(kind)
    if typing.get_origin(kind) is tuple and len(arguments) == 2 and arguments[1] is Ellipsis:
        return arguments[0]
    return None


def _field_default(field: Field) -> Any:
    if field.default is not MISSING:
        return field.default
    if field.default_factory is not MISSING:
        return field.default_factory()
    return MISSING


def _lookup(values: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(values, Mapping) or name not in values:
            return MISSING
        values = values[name]
    return values


def _shown(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _help(option: _Option, default: Any) -> str:
    text = option.field.metadata["help"]
    if option.field.metadata.get("flag"):  # a flag of another name than its field's
        text += f" (config-file key: {_file_key(option.path)})"
    stated = _stated_default(option.field, default)
    if stated:
        text += f" ({stated})"
    return text.replace("%", "%%")  # argparse formats help strings with %


def _file_key(path: tuple[str, ...]) -> str:
    """How messages name a key of the config file: ``lr``, or ``lr in section optimization``."""
    *section, key = path
    return f"{key} in section {'.'.join(section)}" if section else key


def _stated_default(field: Field, default: Any) -> str | None:
    """How --help states a flag's default: "required", "default: <the value>", "default: <the
    field's ``unset`` text>" for None or empty, else None (the help says what happens then)."""
    if default is MISSING:
        return "required"
    if default not in (None, "", ()):
        return f"default: {_shown(default)}"
    unset = field.metadata.get("unset")
    return f"default: {unset}" if unset else None


def _argparse_options(option: _Option) -> dict[str, Any]:
    kind, _ = _optional(option.kind)
    metadata = option.field.metadata
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    item = _items(kind)
    options = {"metavar": _metavar(option.field), "type": metadata.get("parse") or item or kind}
    return {**options, "nargs": "*"} if item is not None else options


def add_config_flags(parser: argparse.ArgumentParser, cls: type, defaults: Mapping[str, Any] | None = None) -> None:
    """Add ``--config FILE.yaml`` and one flag per settable field of ``cls`` (nested dataclasses'
    fields in a group of their own); ``--help`` shows each default, the recipe's where
    ``defaults`` has one. Flags not given stay out of the parsed namespace, so the config file's
    values can stand where no flag overrides them."""
    parser.add_argument(
        CONFIG_FLAG,
        metavar="FILE.yaml",
        default=argparse.SUPPRESS,
        help="read settings from this YAML file: keys are the flags' names with underscores (or the key "
        "a flag's help names), a section per group of flags; flags given on the command line override it",
    )
    groups: dict[tuple[str, ...], Any] = {}
    for option in _options(cls):
        section = option.path[:-1]
        if section and section not in groups:
            groups[section] = parser.add_argument_group(".".join(section), option.sections[-1].metadata["help"])
        group = groups[section] if section else parser
        default = _lookup(defaults or {}, option.path)
        if default is MISSING:
            default = _field_default(option.field)
        dest: dict[str, Any] = {}
        if option.field.metadata.get("positional"):  # a positional argument's name is its dest
            names = [option.dest]
        else:
            names, dest = [flag_name(option.field)], {"dest": option.dest}
        group.add_argument(
            *names,
            **dest,
            default=argparse.SUPPRESS,
            help=_help(option, default),
            **_argparse_options(option),
        )


def config_from_args(cls: type[T], args: argparse.Namespace, defaults: Mapping[str, Any] | None = None) -> T:
    """The config of parsed flags: ``defaults`` < the ``--config`` file < the flags given; validated.

    Raises:
        UsageError: a required setting missing, or a config file that cannot be used (naming the
            file and the key), or what the config's ``validate()`` refuses.
    """
    given = vars(args)
    values = dict(defaults or {})
    if "config" in given:
        values = merged(values, load_config_file(cls, given["config"]))
    for option in _options(cls):
        if option.dest in given:
            value = given[option.dest]
            values = merged(values, _nest(option.path, tuple(value) if isinstance(value, list) else value))
    config = _build(cls, values, ())
    if hasattr(config, "validate"):
        config.validate()
    return config


def parse_config(
    cls: type[T],
    argv: Sequence[str] | None = None,
    *,
    defaults: Mapping[str, Any] | None = None,
    description: str | None = None,
    parents: Sequence[argparse.ArgumentParser] = (),
) -> T:
    """Parse a job's command line (``sys.argv[1:]`` when ``argv`` is None) into its config.

    ``description`` (a docstring) heads ``--help`` as written; ``parents`` add flags of the job's
    own that are not config fields."""
    parser = argparse.ArgumentParser(
        description=inspect.cleandoc(description) if description else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=list(parents),
    )
    add_config_flags(parser, cls, defaults)
    return config_from_args(cls, parser.parse_args(argv), defaults)


# ---- config files ------------------------------------------------------------------------------


def read_yaml_file(path: str, source: str, kind: str = "YAML") -> Any:
    """The parsed contents of a YAML file; a ``UsageError`` starting with ``source`` (the flag and
    path) when it cannot be read or is not ``kind``."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UsageError(f"{source}: cannot read it ({error.strerror})") from error
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"{source}: not valid {kind}: {error}") from error


def load_config_file(cls: type, path: str) -> dict[str, Any]:
    """The settings of a YAML config file for ``cls``, each checked against its field's type.

    Raises:
        UsageError: naming the file: unreadable, not YAML, not a mapping, an unknown key (listing
            the valid ones) or a value of the wrong type.
    """
    source = f"{CONFIG_FLAG} {path}"
    values = read_yaml_file(path, source)
    return _file_values(cls, {} if values is None else values, source, (), ())


def _file_values(
    cls: type, values: Any, source: str, exclude: Sequence[str], section: tuple[str, ...]
) -> dict[str, Any]:
    where = f" in section {'.'.join(section)!r}" if section else ""
    if not isinstance(values, dict):
        raise UsageError(f"{source}: expected a mapping of setting names to values{where}, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if _settable(field, exclude)}
    checked = {}
    for key, value in values.items():
        misplaced = key not in fields or (_nested(hints[key]) and not isinstance(value, dict))
        moved = _moved(cls, exclude, key, section) if misplaced else None
        if moved:  # a flat key of a file written before its setting had a section
            raise UsageError(f"{source}: {moved}")
        if key not in fields:
            raise UsageError(f"{source}: unknown key {key!r}{where}; valid keys: {', '.join(fields)}")
        field, kind = fields[key], hints[key]
        if _nested(kind):
            checked[key] = _file_values(kind, value, source, field.metadata.get("exclude", ()), (*section, key))
            continue
        try:
            checked[key] = _converted(value, kind, field.metadata.get("parse"))
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise UsageError(f"{source}: {'.'.join((*section, key))}: {error}") from None
    return checked


def _moved(cls: type, exclude: Sequence[str], key: str, section: tuple[str, ...]) -> str | None:
    """Where the setting that ``key`` names (its flag's name or its field's, as files written before
    the config had sections give it) belongs now that it is in a section below ``section``, e.g.
    ``lr`` -> ``lr in section optimization``, ``data`` -> ``root in section data``; None when
    ``key`` names no setting of a section below."""
    nested = [option for option in _options(cls, exclude) if len(option.path) > 1]
    by_flag = [option for option in nested if option.flat_key == key]
    option = next(iter(by_flag or [option for option in nested if option.field.name == key]), None)
    if option is None:
        return None
    where = f" in section {'.'.join(section)!r}" if section else ""
    return (
        f"key {key!r}{where} is the setting {flag_name(option.field)}, which now belongs in its section: "
        f"give it as {_file_key((*section, *option.path))}"
    )


def _converted(value: Any, kind: Any, parse: Callable[[str], Any] | None) -> Any:
    """A config-file value as the field's type holds it (lists become tuples, ints floats); strings
    go through the field's parser as the flag's text does."""
    kind, optional = _optional(kind)
    item = _items(kind)
    if value is None:
        if optional:
            return None
        raise ValueError(f"expected {_described(kind)}, got null")
    if item is not None:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {_described(item, many=True)}, got {value!r}")
        return tuple(_converted(element, item, parse) for element in value)
    if parse is not None and isinstance(value, str):
        return parse(value)
    if typing.get_origin(kind) is tuple:  # a fixed-length tuple such as tuple[int, int]
        members = typing.get_args(kind)
        if not isinstance(value, list) or len(value) != len(members):
            raise ValueError(f"expected {_described(kind)}, got {value!r}")
        return tuple(_converted(element, member, None) for element, member in zip(value, members, strict=True))
    return _scalar(value, kind)


def _scalar(value: Any, kind: Any) -> Any:
    matches = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }
    if kind not in matches:
        raise TypeError(f"config fields of type {kind} are not supported")
    if kind is float and isinstance(value, str):
        return _float_text(value)
    if not matches[kind]:
        raise ValueError(f"expected {_described(kind)}, got {value!r}")
    return float(value) if kind is float else value


def _float_text(value: str) -> float:
    """A number YAML left as text: YAML 1.1 (PyYAML) reads 1e-4 as a string, as it wants 1.0e-4."""
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"expected {_described(float)}, got {value!r}") from None


def _described(kind: Any, many: bool = False) -> str:
    """How an error names what a field takes: "an integer", or with ``many`` "integers"."""
    names = {
        bool: ("true or false", "true/false values"),
        int: ("an integer", "integers"),
        float: ("a number", "numbers"),
        str: ("a string", "strings"),
    }
    if typing.get_origin(kind) is tuple:
        return (
            f"lists of {len(typing.get_args(kind))} values"
            if many
            else f"a list of {len(typing.get_args(kind))} values"
        )
    return names[kind][many] if kind in names else str(kind)


# ---- building ----------------------------------------------------------------------------------


def _nest(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for name in reversed(path):
        value = {name: value}
    return value


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``override``'s values, sections merged key by key (a job's defaults under its
    mode's, e.g. ``--local``'s cluster settings over a recipe)."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def _build(cls: type, values: Mapping[str, Any], exclude: Sequence[str], section: tuple[str, ...] = ()) -> Any:
    """An instance of ``cls`` from nested ``values``: fields without a value keep their defaults, and
    a nested dataclass is built from its own fields' defaults and its section's values."""
    unknown = set(values) - {field.name for field in dataclasses.fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(cls)
    arguments = {}
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if _nested(kind):
            arguments[field.name] = _build(
                kind, values.get(field.name, {}), field.metadata.get("exclude", ()), (*section, field.name)
            )
        elif field.name in values:
            arguments[field.name] = values[field.name]
        elif _field_default(field) is MISSING:
            if not _settable(field, exclude):
                raise TypeError(f"{cls.__name__}.{field.name} is set by the program, and it was not")
            given = "it" if field.metadata.get("positional") else "the flag"
            key = _file_key((*section, field.name))
            raise UsageError(f"{flag_name(field)} is required (give {given} or the key {key} in {CONFIG_FLAG})")
    return cls(**arguments)


# ---- flat mappings -----------------------------------------------------------------------------


def flat_keys(cls: type) -> dict[str, tuple[str, ...]]:
    """Each settable field of ``cls`` (nested ones included) by its flat key (its flag's name with
    underscores): the path of field names that reaches it, e.g. ``{"data": ("data", "root"), "lr":
    ("optimization", "lr"), ...}``.

    Raises:
        TypeError: two fields share a flat key (their flags would clash too).
    """
    return {key: option.path for key, option in _flat_options(cls).items()}


def _flat_options(cls: type) -> dict[str, _Option]:
    options: dict[str, _Option] = {}
    for option in _options(cls):
        if option.flat_key in options:
            clash = options[option.flat_key].dest
            raise TypeError(f"{cls.__name__}: {option.dest} and {clash} share the key {option.flat_key}")
        options[option.flat_key] = option
    return options


def to_flat(config: Any) -> dict[str, Any]:
    """The settable fields of ``config`` by flat key (``flat_keys``): what MLflow logs as params,
    under the names the flags have."""
    flat = {}
    for key, path in flat_keys(type(config)).items():
        value = config
        for name in path:
            value = getattr(value, name)
        flat[key] = value
    return flat


def from_flat(cls: type[T], values: Mapping[str, Any]) -> T:
    """The config of flat-keyed ``values`` (``flat_keys``: ``{"data": ROOT, "lr": 0.02}``), the
    other fields at their defaults; lists become tuples where the field is a tuple. Not validated
    (``validate()`` does that).

    Raises:
        TypeError: a key that is no flat key of ``cls``.
        UsageError: a required setting missing.
    """
    return _build(cls, sectioned(cls, values), ())


def sectioned(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat-keyed ``values`` (``flat_keys``) shaped like a config file of ``cls``, each in its
    section: ``{"lr": 0.02}`` -> ``{"optimization": {"lr": 0.02}}``; lists become tuples where the
    field is a tuple.

    Raises:
        TypeError: a key that is no flat key of ``cls``.
    """
    options = _flat_options(cls)
    unknown = set(values) - set(options)
    if unknown:
        raise TypeError(f"{cls.__name__} has no setting {', '.join(sorted(unknown))}")
    nested: dict[str, Any] = {}
    for key, value in values.items():
        nested = merged(nested, _nest(options[key].path, _tupled(value, options[key].kind)))
    return nested


def from_record(cls: type[T], values: Mapping[str, Any]) -> T:
    """A config from a recorded dict: nested as ``dataclasses.asdict`` gives it, or flat (keys as in
    ``flat_keys``) as records written before the config had sections hold it. Keys of neither
    (settings a later version dropped) are ignored; lists become tuples."""
    flat = {}
    for key, path in flat_keys(cls).items():
        value = _lookup(values, path)
        if value is MISSING and key in values and not isinstance(values[key], Mapping):
            value = values[key]
        if value is not MISSING:
            flat[key] = value
    return from_flat(cls, flat)


def _tupled(value: Any, kind: Any) -> Any:
    """``value`` with the lists that JSON, YAML and Ray hand back as tuples again where ``kind`` is a
    tuple type (``tuple[int, ...]``, ``tuple[tuple[int, int], ...]``); other values as they are."""
    kind, _ = _optional(kind)
    if typing.get_origin(kind) is not tuple or not isinstance(value, (list, tuple)):
        return value
    item = _items(kind)
    members = [item] * len(value) if item is not None else list(typing.get_args(kind))
    if len(members) != len(value):
        return tuple(value)
    return tuple(_tupled(element, member) for element, member in zip(value, members, strict=True))
