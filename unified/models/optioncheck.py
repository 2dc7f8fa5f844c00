"""Checks of numeric options and `--set KEY=VALUE` model options, done when the arguments are
parsed so a bad value is a one-line ConfigError before any data is loaded or model built.

`check_number` is the one range check every CLI uses (finite, inside a range). `coerce_overrides`
gives each model option the type its dataclass field declares (ModelConfig or the variant's
Options): `--set max_seq_len=abc` or `--set dropout=abc` is refused here instead of failing as a
traceback inside the model constructor.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from unified.errors import ConfigError


def check_number(flag: str, value: float | int | None, low: float | None = None, high: float | None = None,
                 *, low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Raise ConfigError unless `value` (None = unset, accepted) is a finite number inside
    [low, high] (or the open bounds); the message names the flag, the accepted range and the value."""
    if value is None:
        return
    kind = "an integer" if integer else "a finite number"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if integer:
        ok = ok and float(value).is_integer()
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(f"{flag} must be {kind}{_range_text(low, high, low_open, high_open)}, got {value}")


def _range_text(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{_num(low)}, {_num(high)}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {_num(low)}"
    if high is not None:
        return f" {'<' if high_open else '<='} {_num(high)}"
    return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def option_types(variant: str) -> dict[str, Any]:
    """Declared type of every model option of `variant`: ModelConfig fields and its Options fields."""
    from unified.models.config import ModelConfig
    from unified.models.base import VARIANTS, resolve_variant

    opts = VARIANTS[resolve_variant(variant)].cls.Options
    hints = {**typing.get_type_hints(ModelConfig), **typing.get_type_hints(opts)}
    names = {f.name for f in dataclasses.fields(ModelConfig)} | {f.name for f in dataclasses.fields(opts)}
    return {k: v for k, v in hints.items() if k in names}


def coerce_overrides(variant: str, overrides: dict[str, Any], flag: str = "--set") -> dict[str, Any]:
    """`overrides` with each value converted to its option's declared type (an int is accepted
    for a float option); a value of the wrong type, or a non-finite float, is a ConfigError
    naming the option and the type it takes. Unknown names are left for `split_overrides`."""
    hints = option_types(variant)
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in hints or name in ("variant", "size"):
            out[name] = value
            continue
        converted = _coerce(value, hints[name])
        if converted is _BAD:
            raise ConfigError(f"{flag} {name}={value}: {name} takes {_describe(hints[name])}, got {value!r}")
        out[name] = converted
    return out


_BAD = object()


def conforms(value: Any, hint: Any) -> bool:
    """Whether `value` (e.g. read back from a JSON file) has the declared type `hint`: int is
    accepted for float, bool is not accepted for int, a float must be finite."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is not None:
        return isinstance(value, origin)
    if hint is str:
        return isinstance(value, str)
    if hint in (bool, int, float):
        return _coerce(value, hint) is not _BAD
    return True


def _coerce(value: Any, hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None or (isinstance(value, str) and value.lower() == "none" and type(None) in args):
            return None
        for arg in args:
            if arg is not type(None) and (converted := _coerce(value, arg)) is not _BAD:
                return converted
        return _BAD
    if hint is bool:
        return value if isinstance(value, bool) else _BAD
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return _BAD
        return float(value)
    if hint is str:
        return value if isinstance(value, str) else str(value)
    return value


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "a string",
            type(None): "none"}.get(hint, str(hint))


def parse_overrides(items: list[str] | None) -> dict[str, object]:
    """KEY=VALUE strings -> dict with ints, floats and booleans converted."""
    out: dict[str, object] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE")
        key, value = item.split("=", 1)
        out[key.strip()] = _convert(value.strip())
    return out


def _convert(value: str) -> object:
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
