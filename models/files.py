"""Model descriptions read from disk: the project's own TOML format, or a Hugging Face config.json.

TOML: top-level keys are `ModelConfig` field names (`name` defaults to the file's stem); `base = "<preset>"` starts
from a preset and overrides the keys given. models/examples/custom.toml documents every field.

config.json: dispatched on `architectures[0]` and mapped onto the same fields (models.hf_config). Nothing here reaches
the network.
"""

import dataclasses
import difflib
import json
import os
import tomllib
import types
import typing
from pathlib import Path

from base.inputs import ConfigError
from models.config import ModelConfig
from models.file_checks import EXAMPLE, build, describe, is_type, one_line
from models.hf_config import ARCHITECTURES, from_hf
from models.presets import PRESETS

__all__ = ["ARCHITECTURES", "get_model", "load_model_file"]


def load_model_file(path: str) -> ModelConfig:
    """A ModelConfig from a .toml model file or a Hugging Face config.json (or a folder holding one)."""
    p = Path(path).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        p = p / "config.json"
    if not p.exists():
        raise ConfigError(f"model file {path} not found; give the path of a .toml model file (see {EXAMPLE}) "
                          "or of a Hugging Face config.json")
    if not p.is_file():  # a FIFO or a device would block or never end
        raise ConfigError(f"{path} is not a regular file; give the path of a .toml model file or a config.json")
    suffix = p.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"{path}: a model file must end in .toml (the project's format, see {EXAMPLE}) or .json "
                          f"(a Hugging Face config.json), not {suffix or 'no extension'!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the model file ({one_line(e)}); check the path and its "
                          "permissions") from None
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a model file; fix the file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({one_line(e)}); fix the syntax (see {EXAMPLE})") from None
        return _from_toml(data, str(path), p.stem)
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config.json; download the model's config.json "
                          "again") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({one_line(e)}); fix the syntax or download the model's "
                          "config.json again") from None
    name = p.resolve().parent.name if p.name.lower() == "config.json" else p.stem
    return from_hf(data, str(path), (name or p.stem).lower(), p)


# --- the project's TOML format ---

def _fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(ModelConfig) if f.init}


def _required() -> list[str]:
    return [name for name, f in _fields().items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


def _from_toml(data: dict, where: str, stem: str) -> ModelConfig:
    fields = _fields()
    unknown = [key for key in data if key != "base" and key not in fields]
    if unknown:
        hints = [f"{key!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(key, fields, 1))
                 else repr(key) for key in unknown]
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(hints)}; valid keys are "
                          f"base, {', '.join(fields)} (see {EXAMPLE})")
    types_ = typing.get_type_hints(ModelConfig)
    values = {key: _coerce(key, value, types_[key], where) for key, value in data.items() if key != "base"}
    values.setdefault("name", stem)
    if "base" in data:
        base = data["base"]
        if not isinstance(base, str) or base not in PRESETS:
            raise ConfigError(f"{where}: base {base!r} is not a preset; use one of {', '.join(PRESETS)} "
                              "(or leave base out and give every required field)")
        return build(lambda: dataclasses.replace(PRESETS[base], **values), where)
    missing = [key for key in _required() if key not in values]
    if missing:
        raise ConfigError(f"{where}: missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                          f"add {'them' if len(missing) > 1 else 'it'}, or start from a preset with "
                          f'base = "<preset>" (see {EXAMPLE})')
    return build(lambda: ModelConfig(**values), where)


def _coerce(key: str, value, hint, where: str):
    """Check a TOML value against the field's annotation; lists become tuples, integers become floats where a
    float is wanted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:  # `str | None`: TOML has no null
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], where) if len(inner) == 1 else value
    if origin is tuple:
        elem = args[0] if args else typing.Any
        if isinstance(value, list | tuple) and all(is_type(v, elem) for v in value):
            return tuple(float(v) if elem is float else v for v in value)
        raise ConfigError(f"{where}: {key} must be a list of {describe(elem, plural=True)}, got {value!r}")
    if hint in (bool, int, float, str):
        if is_type(value, hint):
            return float(value) if hint is float else value
        raise ConfigError(f"{where}: {key} must be {describe(hint)}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def get_model(name) -> ModelConfig:
    """A preset by name, or a model file (a path, or a pathlib.Path): a .toml in the project's format or a Hugging
    Face config.json."""
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str):
        raise ConfigError(f"model must be a preset's name or a model file's path, got {name!r} (see `tracer models`)")
    if name.endswith((".toml", ".json")) or "/" in name or os.sep in name:
        return load_model_file(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(PRESETS)}, or a model file "
                          "(.toml or a Hugging Face config.json) (see `tracer models`)")
    return PRESETS[name]
