"""Typed access to a Hugging Face config.json's keys, shared by the architecture readers (models.hf_config,
models.hf_recent)."""

from base.inputs import ConfigError
from models.file_checks import EXAMPLE, describe, is_type

MISSING = object()  # no default: the key is required


class HF:
    """Typed access to one config.json's keys, with errors that name the file, the key and the architecture."""

    def __init__(self, cfg: dict, arch: str, where: str):
        self.cfg, self.arch, self.where = cfg, arch, where

    def fail(self, msg: str):
        raise ConfigError(f"{self.where}: {msg}")

    def missing(self, keys: list[str]):
        self.fail(f"{self.arch} config is missing {', '.join(keys)}; add the key{'s' if len(keys) > 1 else ''} "
                  f"from the model's published config.json (or describe the model in a .toml file, see {EXAMPLE})")

    def get(self, key: str, kind: type, default=MISSING):
        value = self.cfg.get(key)
        if value is None:
            if default is MISSING:
                self.missing([key])
            return default
        if not is_type(value, kind) or (kind is list and not isinstance(value, list)):
            self.fail(f"{key} must be {describe(kind) if kind is not list else 'a list'} in a {self.arch} config, "
                      f"got {value!r}; correct the value")
        return float(value) if kind is float else value

    def int(self, key: str, default=MISSING) -> int:
        value = self.get(key, int, default)
        if value is not default and value < 0:
            self.fail(f"{key} must be >= 0 in a {self.arch} config, got {value}; correct the value")
        return value

    def count(self, key: str) -> int:
        """A count the architecture needs: a positive integer (0 would silently make another model)."""
        value = self.get(key, int)
        if value <= 0:
            self.fail(f"{key} must be a positive integer for {self.arch} (it has that feature), got {value}; correct "
                      "the value, or describe a model without it in a .toml file (see models/examples/custom.toml)")
        return value


def window_pattern(windows: list[int], hf: HF) -> tuple[int, ...]:
    """The shortest period the per-layer windows repeat with (a last, partial period allowed: Gemma 3 27B's 62
    layers are 10 periods of 6 and 2 layers more); () when no layer is windowed."""
    n = len(windows)
    if not n:
        return ()
    period = next(p for p in range(1, n + 1) if all(windows[i] == windows[i % p] for i in range(n)))
    if period > 1 and 2 * period > n:
        hf.fail(f"layer_types do not repeat (no pattern of num_hidden_layers / 2 = {n // 2} layers or fewer "
                f"tiles them); a repeating sliding/full pattern is needed, or write a .toml with window_pattern "
                f"(see {EXAMPLE})")
    pattern = tuple(windows[:period])
    return pattern if any(pattern) else ()
