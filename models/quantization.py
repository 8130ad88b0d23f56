"""How a quantized checkpoint stores its weights and KV cache, read from its files: `quantization_config` in
config.json, or ModelOpt's sibling hf_quant_config.json.

Formats read (as published by the tools that write them):
- `fp8` (block-wise e4m3: DeepSeek and Qwen FP8 releases, transformers' FineGrainedFP8), `modules_to_not_convert`
  respected;
- `mxfp4` (gpt-oss): the routed experts;
- `modelopt` (NVIDIA ModelOpt: FP8, NVFP4, and `kv_cache_quant_algo`), flat or with config_groups, and
  hf_quant_config.json (`{"quantization": {"quant_algo", "kv_cache_quant_algo", "group_size", "exclude_modules"}}`);
- `compressed-tensors` (llm-compressor): FP8 and INT8 W8A8, INT4 W4A16 in groups, NVFP4; its `kv_cache_scheme`;
- `awq` and `gptq`: 4-bit integers in groups of `group_size`.
Excluded modules (`modules_to_not_convert`, `exclude_modules`, `ignore`) are matched against each layer's module names
as the serving engines do: wildcards with fnmatch, `re:` patterns as regular expressions, plain names as substrings.
Anything else is a ConfigError naming what was found, never a silent bf16.
"""

import fnmatch
import json
import re
from pathlib import Path

from base.inputs import ConfigError


def module_names(arch: str, mla: bool, q_lora: bool) -> dict[str, tuple[str, ...]]:
    """The module names of each group of matmul weights in one layer (model.layers.N.<name>), as the architecture's
    Hugging Face model names them."""
    if mla:
        q = ("self_attn.q_a_proj", "self_attn.q_b_proj") if q_lora else ("self_attn.q_proj",)
        attention = (*q, "self_attn.kv_a_proj_with_mqa", "self_attn.kv_b_proj", "self_attn.o_proj")
    elif arch == "Phi3ForCausalLM":  # fused projections
        attention = ("self_attn.qkv_proj", "self_attn.o_proj")
    else:
        attention = tuple(f"self_attn.{p}_proj" for p in "qkvo")
    ff = "feed_forward" if arch == "Llama4ForCausalLM" else "mlp"
    mixtral = tuple(f"block_sparse_moe.experts.0.w{i}" for i in (1, 2, 3))
    experts = {"MixtralForCausalLM": mixtral, "MiniMaxM2ForCausalLM": mixtral,
               "GptOssForCausalLM": ("mlp.experts.gate_up_proj", "mlp.experts.down_proj"),
               "Llama4ForCausalLM": ("feed_forward.experts.gate_up_proj", "feed_forward.experts.down_proj")}.get(
        arch, tuple(f"mlp.experts.0.{p}_proj" for p in ("gate", "up", "down")))
    mlp = ("mlp.gate_up_proj", "mlp.down_proj") if arch == "Phi3ForCausalLM" else tuple(
        f"{ff}.{p}_proj" for p in ("gate", "up", "down"))
    shared = "feed_forward.shared_expert" if arch == "Llama4ForCausalLM" else "mlp.shared_experts"
    return {"attention": attention, "mlp": mlp, "shared": tuple(f"{shared}.{p}_proj" for p in ("gate", "up", "down")),
            "experts": experts}


KNOWN = "fp8, mxfp4, modelopt (FP8, NVFP4), compressed-tensors (FP8, INT8, INT4 W4A16, NVFP4), awq, gptq (4-bit)"


class _Scheme:
    """One checkpoint's scheme: the dtype its quantized matmuls store, the groups it quantizes, what it excludes."""

    def __init__(self, dtype: str, exclude: list, groups=("attention", "mlp", "shared", "experts"), group_size=None,
                 kv=None, notes=()):
        self.dtype, self.exclude, self.groups, self.group_size = dtype, exclude, groups, group_size
        self.kv, self.notes = kv, list(notes)
        self.symmetric = False


def read_quantization(cfg: dict, path: Path, layers: list[str], names: dict, base: str,
                      where: str) -> tuple[dict, tuple[str, ...]]:
    """(ModelConfig field overrides, notes) for a config.json at `path`. `layers`: each served layer's kind, "dense"
    or "moe" (which groups it has); `names`: module_names(); `base`: the unquantized weights' dtype."""
    quant = cfg.get("quantization_config")
    sibling = path.parent / "hf_quant_config.json"
    if quant is None and not sibling.is_file():
        return {}, ()
    if quant is not None and not isinstance(quant, dict):
        raise ConfigError(f"{where}: quantization_config must be a JSON object, got {quant!r}; fix or remove it")
    method = (quant or {}).get("quant_method", "modelopt")
    if method == "modelopt" and not (quant or {}).get("quant_algo"):
        quant = _read_sibling(sibling, where)
    return _apply(_scheme(str(method).lower(), quant, where), layers, names, base, where)


def _read_sibling(sibling: Path, where: str) -> dict:
    if not sibling.is_file():
        raise ConfigError(f"{where}: quant_method modelopt without quant_algo, and no hf_quant_config.json beside it; "
                          "put the checkpoint's hf_quant_config.json next to its config.json")
    try:
        data = json.loads(sibling.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{sibling}: cannot read it ({' '.join(str(e).split())}); download the checkpoint's "
                          "hf_quant_config.json again") from None
    quant = data.get("quantization") if isinstance(data, dict) else None
    if not isinstance(quant, dict):
        raise ConfigError(f"{sibling}: no \"quantization\" object; expected ModelOpt's "
                          '{"quantization": {"quant_algo": ..., "kv_cache_quant_algo": ..., "exclude_modules": [...]}}')
    return quant


def _fail(where: str, found: str):
    raise ConfigError(f"{where}: quantization {found} is not supported (supported: {KNOWN}); remove "
                      "quantization_config to price the unquantized model, or write a .toml with weight_dtype and "
                      "expert_dtype (see models/examples/custom.toml)")


def _scheme(method: str, q: dict, where: str) -> _Scheme:
    if method == "fp8":  # block-wise e4m3 (128 x 128 scales: 1/16384 of the bytes, not counted)
        return _Scheme("float8", _list(q, "modules_to_not_convert", "ignored_layers"))
    if method == "mxfp4":  # gpt-oss: the routed experts only
        return _Scheme("mxfp4", _list(q, "modules_to_not_convert"), groups=("experts",))
    if method == "modelopt":
        algo = str(q.get("quant_algo")).upper()
        dtype = {"FP8": "float8", "NVFP4": "nvfp4"}.get(algo) or _fail(where, f"modelopt {q.get('quant_algo')!r}")
        kv = q.get("kv_cache_quant_algo")
        if kv is None and isinstance(q.get("kv_cache_scheme"), dict):
            kv = _kv_scheme(q["kv_cache_scheme"], where)
        elif kv is not None:
            kv = {"FP8": "float8"}.get(str(kv).upper()) or _fail(where, f"kv_cache_quant_algo {kv!r}")
        if dtype == "nvfp4" and q.get("group_size", 16) != 16:
            _fail(where, f"NVFP4 with group_size {q.get('group_size')}")
        return _Scheme(dtype, _list(q, "exclude_modules", "ignore"), kv=kv)
    if method == "compressed-tensors":
        return _compressed_tensors(q, where)
    if method in ("awq", "gptq"):
        bits = q.get("bits", q.get("w_bit"))
        if bits != 4:
            _fail(where, f"{method} with {bits} bits")
        group = q.get("group_size", q.get("q_group_size", 128))
        if not isinstance(group, int) or group == 0 or group < -1:
            raise ConfigError(f"{where}: {method} group_size {group!r} is not a positive integer (or -1)")
        notes = []
        if group == -1:  # one scale per output channel: a group as long as the largest input dimension
            group, notes = 1 << 20, ["int4 scales per output channel (group_size -1): their bytes are negligible"]
        return _Scheme("int4", _list(q, "modules_to_not_convert"), group_size=group, notes=notes)
    _fail(where, f"method {method!r}")


def _compressed_tensors(q: dict, where: str) -> _Scheme:
    groups = q.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        raise ConfigError(f"{where}: compressed-tensors quantization_config has no config_groups; give the "
                          "checkpoint's own config.json")
    schemes = set()
    for group in groups.values():
        w, a = group.get("weights") or {}, group.get("input_activations") or {}
        key = (w.get("num_bits"), w.get("type"), a.get("num_bits"), a.get("type"))
        dtype = {(8, "float", 8, "float"): "float8", (8, "int", 8, "int"): "int8", (4, "int", None, None): "int4",
                 (4, "float", 4, "float"): "nvfp4", (4, "float", None, None): "nvfp4"}.get(key)
        if dtype is None:
            _fail(where, f"compressed-tensors weights {w.get('num_bits')}-bit {w.get('type')} with activations "
                         f"{a.get('num_bits')}-bit {a.get('type')}")
        int4 = dtype == "int4"
        schemes.add((dtype, w.get("group_size") if int4 else None, int4 and w.get("symmetric") is True))
    if len(schemes) > 1:
        _fail(where, f"compressed-tensors with several schemes ({sorted(map(str, schemes))})")
    (dtype, group_size, symmetric), = schemes
    kv = _kv_scheme(q["kv_cache_scheme"], where) if isinstance(q.get("kv_cache_scheme"), dict) else None
    scheme = _Scheme(dtype, _list(q, "ignore"), group_size=group_size or None, kv=kv)
    scheme.symmetric = symmetric  # symmetric int4 groups store a scale and no zero point
    return scheme


def _kv_scheme(scheme: dict, where: str) -> str:
    if (scheme.get("num_bits"), scheme.get("type")) == (8, "float"):
        return "float8"
    return _fail(where, f"KV cache {scheme.get('num_bits')}-bit {scheme.get('type')}")


def _list(q: dict, *keys) -> list:
    for key in keys:
        if q.get(key) is not None:
            if not isinstance(q[key], list) or not all(isinstance(p, str) for p in q[key]):
                raise ConfigError(f"quantization {key} must be a list of module names, got {q[key]!r}")
            return q[key]
    return []


def excluded(name: str, patterns: list[str]) -> bool:
    """Whether module `name` (model.layers.3.self_attn.q_proj) is kept unquantized by any pattern."""
    for p in patterns:
        if p.startswith("re:"):
            if re.match(p[3:], name):
                return True
        elif any(c in p for c in "*?["):
            if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*"):
                return True
        elif p in name:
            return True
    return False


def _apply(scheme: _Scheme, layers: list[str], names: dict, base: str, where: str) -> tuple[dict, tuple[str, ...]]:
    """ModelConfig fields: each group quantized unless its modules are excluded in most served layers (a mixed split
    is noted with its share); `base` is the unquantized dtype. Only fields that differ from what they inherit."""
    kinds = {"dense": ("attention", "mlp"), "moe": ("attention", "shared", "experts")}
    decided, notes = {}, list(scheme.notes)
    for group in scheme.groups:
        present = [i for i, kind in enumerate(layers) if group in kinds[kind]]
        if not present:
            continue
        kept = [i for i in present if all(excluded(f"model.layers.{i}.{m}", scheme.exclude) for m in names[group])]
        quantized = len(kept) * 2 <= len(present)
        decided[group] = scheme.dtype if quantized else base
        if kept and len(kept) != len(present):
            notes.append(f"{group} weights are kept unquantized in {len(kept)} of {len(present)} layers; priced as "
                         f"{decided[group]} in all of them")
    if not decided:  # e.g. mxfp4, which quantizes routed experts, on a dense model: nothing would be priced as stored
        raise ConfigError(f"{where}: its quantization ({scheme.dtype}) applies to {', '.join(scheme.groups)} weights, "
                          "which this model does not have; check the quantization_config against the architecture")
    weights = decided.get("mlp", decided.get("shared"))
    if decided.get("shared", weights) != weights:
        notes.append(f"shared experts are stored in {decided['shared']} but priced as the dense layers' {weights}")
    fields = {"weight_dtype": weights} if weights and weights != base else {}
    inherited = weights or base
    for group, field in (("attention", "attn_dtype"), ("experts", "expert_dtype")):
        if decided.get(group, inherited) != inherited:
            fields[field] = decided[group]
    if scheme.kv:
        fields["kv_dtype"] = scheme.kv
    if scheme.group_size and scheme.dtype == "int4":
        fields["int4_group"] = scheme.group_size
    if scheme.symmetric:
        fields["int4_zero_points"] = False
    if not excluded("lm_head", scheme.exclude) and scheme.dtype in ("float8", "int8") and "attention" in scheme.groups:
        notes.append(f"the checkpoint may store the LM head in {scheme.dtype}; it is priced in bf16, as the embedding")
    return fields, tuple(notes)
