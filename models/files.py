"""Model descriptions read from disk: the project's own TOML format, or a Hugging Face config.json.

TOML: top-level keys are `ModelConfig` field names (`name` defaults to the file's stem); `base = "<preset>"` starts
from a preset and overrides the keys given. models/examples/custom.toml documents every field.

config.json: dispatched on `architectures[0]` (see ARCHITECTURES) and mapped onto the same fields. Anything that
would change the cost but has no field here (an unusual layer layout, an unknown quantization) is refused with a
ConfigError rather than priced wrongly. Nothing here reaches the network.
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
from models.presets import PRESETS
from models.quantization import module_names, read_quantization

EXAMPLE = "models/examples/custom.toml"
_MISSING = object()


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
        raise ConfigError(f"{path}: cannot read the model file ({_one_line(e)}); check the path and its "
                          "permissions") from None
    if suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to be a model file; fix the file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({_one_line(e)}); fix the syntax (see {EXAMPLE})") from None
        return _from_toml(data, str(path), p.stem)
    try:
        data = json.loads(text)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config.json; download the model's config.json "
                          "again") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({_one_line(e)}); fix the syntax or download the model's "
                          "config.json again") from None
    name = p.resolve().parent.name if p.name.lower() == "config.json" else p.stem
    return _from_hf(data, str(path), (name or p.stem).lower(), p)


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _build(make, where: str) -> ModelConfig:
    """Run the constructor; ModelConfig's own checks (and any type slip they meet) become one-line ConfigErrors."""
    try:
        return make()
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        raise ConfigError(f"{where}: {_one_line(e)}") from None


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
        return _build(lambda: dataclasses.replace(PRESETS[base], **values), where)
    missing = [key for key in _required() if key not in values]
    if missing:
        raise ConfigError(f"{where}: missing required field{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                          f"add {'them' if len(missing) > 1 else 'it'}, or start from a preset with "
                          f'base = "<preset>" (see {EXAMPLE})')
    return _build(lambda: ModelConfig(**values), where)


def _coerce(key: str, value, hint, where: str):
    """Check a TOML value against the field's annotation; lists become tuples, integers become floats where a
    float is wanted."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union) and type(None) in args:  # `str | None`: TOML has no null
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0], where) if len(inner) == 1 else value
    if origin is tuple:
        elem = args[0] if args else typing.Any
        if isinstance(value, list | tuple) and all(_is(v, elem) for v in value):
            return tuple(float(v) if elem is float else v for v in value)
        raise ConfigError(f"{where}: {key} must be a list of {_describe(elem, plural=True)}, got {value!r}")
    if hint in (bool, int, float, str):
        if _is(value, hint):
            return float(value) if hint is float else value
        raise ConfigError(f"{where}: {key} must be {_describe(hint)}, got {value!r} "
                          f"({type(value).__name__})")
    return value


def _is(value, hint) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint, plural: bool = False) -> str:
    one = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    many = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
    return (many if plural else one).get(hint, "values" if plural else "a value")


# --- Hugging Face config.json ---

_COMMON = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
# Keys each architecture needs beyond _COMMON; a tuple inside is a set of alternatives.
_REQUIRED = {
    "LlamaForCausalLM": (),
    "Qwen2ForCausalLM": (),
    "Qwen3ForCausalLM": (),
    "MistralForCausalLM": (),
    "MixtralForCausalLM": ("num_local_experts", "num_experts_per_tok"),
    "Qwen3MoeForCausalLM": ("num_experts", "num_experts_per_tok", "moe_intermediate_size"),
    "DeepseekV3ForCausalLM": ("n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size",
                              "first_k_dense_replace", "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim",
                              "qk_rope_head_dim", "v_head_dim"),
    "GptOssForCausalLM": ("num_local_experts", ("num_experts_per_tok", "experts_per_token"), "layer_types"),
}
_NULLABLE = {"q_lora_rank", "n_shared_experts"}  # null means none (DeepSeek-V2-Lite has no query compression)


class _HF:
    """Typed access to one config.json's keys, with errors that name the file, the key and the architecture."""

    def __init__(self, cfg: dict, arch: str, where: str):
        self.cfg, self.arch, self.where = cfg, arch, where

    def fail(self, msg: str):
        raise ConfigError(f"{self.where}: {msg}")

    def missing(self, keys: list[str]):
        self.fail(f"{self.arch} config is missing {', '.join(keys)}; add the key{'s' if len(keys) > 1 else ''} "
                  f"from the model's published config.json (or describe the model in a .toml file, see {EXAMPLE})")

    def get(self, key: str, kind: type, default=_MISSING):
        value = self.cfg.get(key)
        if value is None:
            if default is _MISSING:
                self.missing([key])
            return default
        if not _is(value, kind) or (kind is list and not isinstance(value, list)):
            self.fail(f"{key} must be {_describe(kind) if kind is not list else 'a list'} in a {self.arch} config, "
                      f"got {value!r}; correct the value")
        return float(value) if kind is float else value

    def int(self, key: str, default=_MISSING) -> int:
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


def _from_hf(cfg, where: str, name: str, path: Path) -> ModelConfig:
    supported = ", ".join(_REQUIRED)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: a Hugging Face config.json holds a JSON object, not a {type(cfg).__name__}; "
                          "give the model's config.json")
    archs = cfg.get("architectures")
    if not isinstance(archs, list) or not archs or not isinstance(archs[0], str):
        raise ConfigError(f"{where}: no architectures list, so the model type is unknown; add e.g. "
                          f'"architectures": ["LlamaForCausalLM"] (supported: {supported})')
    arch = archs[0]
    if arch not in _REQUIRED:
        raise ConfigError(f"{where}: architecture {arch} is not supported; supported: {supported} (or describe "
                          f"the model in a .toml file, see {EXAMPLE})")
    hf = _HF(cfg, arch, where)
    missing = []
    for key in (*_COMMON, *_REQUIRED[arch]):
        keys = key if isinstance(key, tuple) else (key,)
        if not any(k in cfg and (cfg[k] is not None or k in _NULLABLE) for k in keys):
            missing.append(" or ".join(keys))
    if missing:
        hf.missing(missing)
    values = _hf_common(hf)
    values.update(_ARCH_FIELDS[arch](hf, values))
    moe = values.get("n_experts", 0) > 0
    layers = ["moe" if moe and i >= values.get("first_dense", 0) else "dense" for i in range(values["n_layers"])]
    names = module_names(arch, values.get("kv_lora_rank", 0) > 0, values.get("q_lora_rank", 0) > 0)
    quant, notes = read_quantization(cfg, path, layers, names, values["dtype"], where)
    values.update(quant, notes=(*values.get("notes", ()), *notes))
    return _build(lambda: ModelConfig(name=name, **values), where)


def _hf_common(hf: _HF) -> dict:
    hidden, n_heads = hf.int("hidden_size"), hf.int("num_attention_heads")
    values = dict(vocab_size=hf.int("vocab_size"), hidden=hidden, n_layers=hf.int("num_hidden_layers"),
                  n_heads=n_heads, n_kv_heads=hf.int("num_key_value_heads", n_heads),
                  head_dim=hf.int("head_dim", hidden // n_heads if n_heads > 0 else 0),
                  ffn=hf.int("intermediate_size"), tie_embeddings=hf.get("tie_word_embeddings", bool, False))
    rope = hf.cfg.get("rope_parameters")  # newer transformers keep rope_theta there
    theta = hf.get("rope_theta", float, None)
    if theta is None and isinstance(rope, dict) and rope.get("rope_theta") is not None:
        theta = _HF(rope, hf.arch, hf.where).get("rope_theta", float)
    if theta is not None:
        values["rope_theta"] = theta
    if (eps := hf.get("rms_norm_eps", float, None)) is not None:
        values["norm_eps"] = eps
    dtype = hf.cfg.get("torch_dtype") or hf.cfg.get("dtype") or "bfloat16"
    if dtype not in ("bfloat16", "float16", "float32"):
        hf.fail(f"torch_dtype {dtype!r} is not bfloat16, float16 or float32; give the model's activation dtype")
    values["dtype"] = "float32" if dtype == "float32" else "bfloat16"  # float16: the same bytes and peak as bf16
    return values


def _llama(hf: _HF, values: dict) -> dict:
    return dict(qkv_bias=hf.get("attention_bias", bool, False))


def _no_sliding_window(hf: _HF):
    if hf.get("use_sliding_window", bool, False):
        hf.fail("use_sliding_window = true: Qwen's per-layer sliding window layout (max_window_layers) is not "
                f"supported; set it to false (the published models' setting), or write a .toml with window_pattern "
                f"(see {EXAMPLE})")


def _qwen2(hf: _HF, values: dict) -> dict:
    """Qwen2 and Qwen2.5: biases on the q, k and v projections (priced with one on the output projection too, as
    qkv_bias has it: `hidden` values a layer)."""
    _no_sliding_window(hf)
    return dict(qkv_bias=True, notes=("the output projection's bias counted with q, k and v's (hidden values a "
                                      "layer, < 0.001% of the weights)",))


def _qwen3(hf: _HF, values: dict) -> dict:
    _no_sliding_window(hf)
    return dict(qkv_bias=hf.get("attention_bias", bool, False),
                notes=("q/k RMSNorms over head_dim values not priced (a few FLOPs a head)",))


def _mistral(hf: _HF, values: dict) -> dict:
    """Mistral, Mistral-Nemo, Mistral Large: head_dim apart from hidden / heads (read in _hf_common), an optional
    sliding window on every layer."""
    window = hf.int("sliding_window", None)
    return dict(window_pattern=(window,)) if window else {}


def _mixtral(hf: _HF, values: dict) -> dict:
    extra = dict(n_experts=hf.count("num_local_experts"), n_active=hf.count("num_experts_per_tok"),
                 expert_ffn=values["ffn"])
    if (window := hf.int("sliding_window", None)) is not None:  # Mistral-style: every layer windowed
        extra["window_pattern"] = (window,)
    return extra


def _qwen3_moe(hf: _HF, values: dict) -> dict:
    if hf.get("mlp_only_layers", list, []) or hf.int("decoder_sparse_step", 1) != 1:
        hf.fail("dense layers among the MoE layers (mlp_only_layers non-empty or decoder_sparse_step != 1): that "
                "layout is not supported; only the first layers may be dense (first_dense), so use "
                f"mlp_only_layers = [] and decoder_sparse_step = 1, or write a .toml (see {EXAMPLE})")
    if hf.get("use_sliding_window", bool, False):
        hf.fail("use_sliding_window = true: Qwen3's per-layer sliding window layout is not supported; set it to "
                f"false, or write a .toml with window_pattern (see {EXAMPLE})")
    return dict(qkv_bias=hf.get("attention_bias", bool, False), n_experts=hf.count("num_experts"),
                n_active=hf.count("num_experts_per_tok"), expert_ffn=hf.count("moe_intermediate_size"))


def _deepseek_v3(hf: _HF, values: dict) -> dict:
    if hf.int("moe_layer_freq", 1) != 1:
        hf.fail("moe_layer_freq != 1 (dense layers among the MoE layers) is not supported; only the first "
                "first_k_dense_replace layers may be dense, so set moe_layer_freq = 1 or write a .toml "
                f"(see {EXAMPLE})")
    nope, rope = hf.count("qk_nope_head_dim"), hf.count("qk_rope_head_dim")
    scoring = hf.cfg.get("scoring_func", "sigmoid")  # transformers' own DeepseekV3 (no key) scores with a sigmoid
    if scoring not in ("sigmoid", "softmax"):
        hf.fail(f"scoring_func {scoring!r} is not sigmoid or softmax; correct the value")
    notes = []
    if hf.int("num_nextn_predict_layers", 0):
        notes.append("the multi-token-prediction module is not part of the served model")
    if hf.int("n_group", 1) > 1:
        notes.append("group-limited routing (n_group, topk_group) picks the same number of experts")
    return dict(n_kv_heads=values["n_heads"], head_dim=nope + rope, q_lora_rank=hf.int("q_lora_rank", 0),
                kv_lora_rank=hf.count("kv_lora_rank"), qk_nope_head_dim=nope, qk_rope_head_dim=rope,
                v_head_dim=hf.count("v_head_dim"), n_experts=hf.count("n_routed_experts"),
                n_active=hf.count("num_experts_per_tok"), n_shared=hf.int("n_shared_experts", 0),
                expert_ffn=hf.count("moe_intermediate_size"), first_dense=hf.int("first_k_dense_replace"),
                router=scoring, notes=tuple(notes))


def _gpt_oss(hf: _HF, values: dict) -> dict:
    n_layers = values["n_layers"]
    layer_types = hf.get("layer_types", list)
    if len(layer_types) != n_layers:
        hf.fail(f"layer_types has {len(layer_types)} entries but num_hidden_layers is {n_layers}; give one entry "
                "per layer")
    windows = []
    for kind in layer_types:
        if kind == "sliding_attention":
            windows.append(hf.int("sliding_window"))
        elif kind == "full_attention":
            windows.append(0)
        else:
            hf.fail(f"layer type {kind!r} is not supported; layer_types entries must be sliding_attention or "
                    "full_attention")
    per_token = "num_experts_per_tok" if hf.cfg.get("num_experts_per_tok") is not None else "experts_per_token"
    return dict(window_pattern=_window_pattern(windows, hf), qkv_bias=hf.get("attention_bias", bool, False),
                attn_sinks=True, n_experts=hf.count("num_local_experts"), n_active=hf.count(per_token),
                expert_ffn=values["ffn"], expert_bias=True,
                notes=("YaRN rope scaling and the SwiGLU clamp do not change the cost",))


def _window_pattern(windows: list[int], hf: _HF) -> tuple[int, ...]:
    """The shortest period that tiles the per-layer windows exactly; () when no layer is windowed."""
    n = len(windows)
    if not n:
        return ()
    period = next(p for p in range(1, n + 1) if n % p == 0 and all(windows[i] == windows[i % p] for i in range(n)))
    if period > 1 and period == n:
        hf.fail(f"layer_types do not repeat (no period that divides num_hidden_layers = {n} tiles them); a "
                f"repeating sliding/full pattern is needed, or write a .toml with window_pattern (see {EXAMPLE})")
    pattern = tuple(windows[:period])
    return pattern if any(pattern) else ()


_ARCH_FIELDS = {"LlamaForCausalLM": _llama, "Qwen2ForCausalLM": _qwen2, "Qwen3ForCausalLM": _qwen3,
                "MistralForCausalLM": _mistral, "MixtralForCausalLM": _mixtral, "Qwen3MoeForCausalLM": _qwen3_moe,
                "DeepseekV3ForCausalLM": _deepseek_v3, "GptOssForCausalLM": _gpt_oss}
ARCHITECTURES = tuple(_ARCH_FIELDS)


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
