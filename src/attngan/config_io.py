"""Reading and checking configs: one loader and one validator for every config dataclass.

A config is a dataclass whose fields are values or sections (dataclasses). A field's limits are
its metadata, written beside its default with `param(default, at_least=1, at_most=256)`;
`validate` walks the fields and holds each value to its own limits, and `apply_overrides` reads
nested mappings (a YAML or JSON file, `--set` values, a saved model's config.json) onto a copy,
refusing unknown keys and values of the wrong type. Neither knows any particular config: those
live in config.py.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable

from attngan.errors import AttnGANError, check_seed


class ConfigError(AttnGANError, ValueError):
    """A config file or override that cannot be applied (unknown key, wrong type, out of range)."""


# The limits a field may declare, each checked by `validate`:
#   choices=(...)            the value is one of these strings
#   at_least=n, above=n      a lower bound, included or not
#   at_most=n                an upper bound, included
#   range=(lo, hi)           both bounds in one phrase ("from 0 to 1"); open="high" leaves out hi,
#                            open="low" leaves out lo. For a tuple of numbers, each number's range.
#   multiple_of=n, why="..." the value divides by n; `why` is said in the message
#   seed=True                a seed (attngan.errors.check_seed)
LIMITS = frozenset({"choices", "at_least", "above", "at_most", "range", "open", "multiple_of", "why", "seed"})


def param(default: Any, **limits: Any) -> Any:
    """A dataclass field with this default and these limits (LIMITS) as its metadata."""
    unknown = sorted(set(limits) - LIMITS)
    if unknown:
        raise TypeError(f"unknown limits {unknown}; choose from {sorted(LIMITS)}")
    if limits.get("open") not in (None, "low", "high") or ("open" in limits and "range" not in limits):
        raise TypeError("open= is 'low' or 'high', and only beside range=")
    return dataclasses.field(default=default, metadata=limits)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_section(f: dataclasses.Field) -> bool:
    return f.default_factory is not dataclasses.MISSING


# Overrides: nested mappings onto a copy.

def apply_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """A copy of `cfg` with nested `overrides` applied, validated; unknown keys and wrong types fail."""
    cfg = copy.deepcopy(cfg)
    _apply(cfg, overrides, "")
    return validate(cfg)


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """A `cls` (a config dataclass) from a nested mapping over its defaults, validated."""
    return apply_overrides(cls(), d)


def _apply(obj: Any, overrides: Any, path: str) -> None:
    if not isinstance(overrides, dict):
        raise ConfigError(f"'{path or 'config'}' must be a mapping, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for key, value in overrides.items():
        name = _join(path, key)
        if key not in fields:
            raise ConfigError(f"unknown config key '{name}'")
        if _is_section(fields[key]):
            _apply(getattr(obj, key), value, name)
        else:
            setattr(obj, key, _coerce(fields[key].default, value, name))


def _coerce(default: Any, value: Any, name: str) -> Any:
    # The declared default's type decides. Ints are accepted where floats are expected (YAML
    # writes 5 for 5.0); nothing else converts.
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"'{name}' must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return value
    if isinstance(default, tuple):
        if (not isinstance(value, (list, tuple)) or len(value) != len(default)
                or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)):
            raise ConfigError(f"'{name}' must be a list of {len(default)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    return value


# Validation: every field against its own limits, so a bad value is one line that names its key,
# before any data is read or any file is written. Configs built in Python bypass _coerce, so the
# types are checked here too (and a NaN, which fails every comparison, cannot slip through).

def validate(cfg: Any) -> Any:
    """Check every field of `cfg` against its limits; the first problem is a ConfigError (one line,
    naming the key and the value). Returns `cfg` unchanged."""
    _validate(cfg, "")
    return cfg


def _validate(obj: Any, path: str) -> None:
    fields = dataclasses.fields(obj)
    names = {f.name for f in fields}
    # An attribute set in Python under a name that is no field (a typo, a field that moved) would
    # otherwise be ignored without a word.
    stray = [k for k in vars(obj) if k not in names]
    if stray:
        raise ConfigError(f"unknown config key '{_join(path, stray[0])}'")
    for f in fields:
        key, value = _join(path, f.name), getattr(obj, f.name)
        if _is_section(f):
            expected = type(f.default_factory())
            if not isinstance(value, expected):
                raise ConfigError(f"'{key}' must be a {expected.__name__} section, got {type(value).__name__}")
            _validate(value, key)
        else:
            _check_value(key, value, f.default, f.metadata)
    # What spans several fields of a section (a property made of two, say) is the section's own
    # check(), called once its fields are known to be sound.
    if callable(getattr(obj, "check", None)):
        obj.check()


def _check_value(key: str, value: Any, default: Any, limits: Any) -> None:
    if limits.get("seed"):
        try:
            check_seed(value, f"'{key}'")
        except AttnGANError as e:
            raise ConfigError(str(e)) from None
        return
    if isinstance(default, tuple):
        _check_numbers(key, value, len(default), limits)
        return
    _check_type(key, value, default)
    if "choices" in limits and value not in limits["choices"]:
        raise ConfigError(f"'{key}' must be one of {', '.join(limits['choices'])}, got {value!r}")
    if "at_least" in limits and value < limits["at_least"]:
        low = limits["at_least"]
        raise ConfigError(f"'{key}' must be {'0 or more' if low == 0 else f'at least {low:g}'}, got {value!r}")
    if "above" in limits and not value > limits["above"]:
        raise ConfigError(f"'{key}' must be greater than {limits['above']:g}, got {value!r}")
    if "range" in limits and not _in_range(value, limits):
        raise ConfigError(f"'{key}' must be {_range_phrase(limits)}, got {value!r}")
    if "at_most" in limits and value > limits["at_most"]:
        raise ConfigError(f"'{key}' must be at most {limits['at_most']:g}, got {value!r}")
    if "multiple_of" in limits and value % limits["multiple_of"]:
        n = limits["multiple_of"]
        why = f" ({limits['why']})" if "why" in limits else ""
        raise ConfigError(f"'{key}' must be {'even' if n == 2 else f'a multiple of {n}'}{why}, got {value!r}")


def _check_type(key: str, value: Any, default: Any) -> None:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
    elif isinstance(default, (int, float)):
        kind = float if isinstance(default, float) else int
        if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
            raise ConfigError(f"'{key}' must be {'a number' if kind is float else 'an integer'}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"'{key}' must be a finite number, got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"'{key}' must be a string, got {value!r}")


def _check_numbers(key: str, value: Any, n: int, limits: Any) -> None:
    ok = (isinstance(value, (tuple, list)) and len(value) == n
          and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
          and all(_in_range(v, limits) for v in value if "range" in limits))
    if not ok:
        each = f", each {_range_phrase(limits)}" if "range" in limits else ""
        raise ConfigError(f"'{key}' must be {'two' if n == 2 else n} numbers{each}, got {value!r}")


def _in_range(value: float, limits: Any) -> bool:
    low, high = limits["range"]
    open_end = limits.get("open")
    return ((low < value if open_end == "low" else low <= value)
            and (value < high if open_end == "high" else value <= high))


def _range_phrase(limits: Any) -> str:
    low, high = limits["range"]
    if limits.get("open") == "low":
        return f"greater than {low:g} and at most {high:g}"
    return f"from {low:g} to {high:g}{' (exclusive)' if limits.get('open') == 'high' else ''}"


# Files and presets.

def load(spec: str, presets: dict[str, Callable[[], Any]], overrides: dict[str, Any] | None = None, *,
         default: str, what: str = "preset",
         translate: Callable[[dict[str, Any]], tuple[str, dict[str, Any]] | None] | None = None) -> Any:
    """A preset name (a key of `presets`) or a YAML/JSON file, then `overrides`; validated.

    A file holds overrides over the preset it names under `preset:` (else `default`). `translate`,
    where given, may read a file of another format instead: it returns (preset name, overrides),
    or None for a file it does not recognise. `what` names the presets in messages."""
    if spec in presets:
        cfg = presets[spec]()
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"'{spec}' is neither a {what} ({', '.join(presets)}) nor a config file")
        raw = read_file(path)
        base_and_overrides = translate(raw) if translate is not None else None
        if base_and_overrides is None:
            raw = dict(raw)
            base_and_overrides = (raw.pop("preset", default), raw)
        base, over = base_and_overrides
        cfg = apply_overrides(pick(presets, base, what), over)
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return validate(cfg)


def pick(presets: dict[str, Callable[[], Any]], name: Any, what: str = "preset") -> Any:
    """The config of preset `name`, or a ConfigError that lists the presets."""
    if not isinstance(name, str) or name not in presets:
        raise ConfigError(f"unknown {what} '{name}'; choose one of {', '.join(presets)}")
    return presets[name]()


def read_file(path: Path) -> dict[str, Any]:
    """The mapping at the top of a YAML (or JSON) config file; an empty file is {}."""
    import yaml

    try:
        raw = yaml_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config {path}: {e}".splitlines()[0]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return raw


# Configs are small: these bounds refuse hostile YAML (an alias "billion laughs" bomb, a file
# nested thousands deep) in milliseconds, long before it could cost memory or blow the stack.
YAML_MAX_DEPTH = 50
YAML_MAX_NODES = 100_000
YAML_MAX_BYTES = 1_000_000

_YAML_LOADER = None


def _yaml_loader():
    """The loader class of yaml_load, built once (yaml is imported only when a config is read)."""
    global _YAML_LOADER
    if _YAML_LOADER is not None:
        return _YAML_LOADER
    import yaml
    from yaml.events import AliasEvent

    class Loader(yaml.SafeLoader):
        def compose_document(self):
            self._depth, self._nodes = 0, 0
            return super().compose_document()

        def compose_node(self, parent, index):
            if self.check_event(AliasEvent):
                raise yaml.composer.ComposerError(
                    None, None, "YAML aliases (*name) are not accepted in a config; write the value out",
                    self.peek_event().start_mark)
            self._nodes += 1
            if self._nodes > YAML_MAX_NODES:
                raise yaml.composer.ComposerError(None, None, f"more than {YAML_MAX_NODES} values",
                                                  self.peek_event().start_mark)
            self._depth += 1
            if self._depth > YAML_MAX_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested more than {YAML_MAX_DEPTH} deep",
                                                  self.peek_event().start_mark)
            try:
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    bool_tag = "tag:yaml.org,2002:bool"
    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != bool_tag]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(bool_tag, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    # YAML 1.1 wants a dot and a signed exponent in a float: 1e-3 and 2.5e3 would stay strings, and a
    # learning rate written the usual way be refused as "must be a number".
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    _YAML_LOADER = Loader
    return Loader


def yaml_load(text: str) -> Any:
    """yaml.safe_load, except that only true/false are booleans (YAML 1.1 also reads on/off/yes/no
    as booleans, which turned `amp: off`, a documented value, into False and a type error), 1e-3 is
    a number, and aliases, deep nesting and huge documents are refused (yaml.YAMLError)."""
    import yaml

    if len(text) > YAML_MAX_BYTES:
        raise yaml.YAMLError(f"a config is at most {YAML_MAX_BYTES} characters, got {len(text)}")
    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass
