"""How the figures of a trace were read: the notes `tracer trace` prints under its tables, by theme (the method,
the stored dtypes, the model's features, the layout, the compiler)."""

from models.config import ModelConfig
from tracer.quirks import QUIRKS


def notes(cfg: ModelConfig, compiler: str, sequence_shards: int = 1, routing: str = "uniform",
          fusion: str = "kernels", overlap: tuple[str, ...] = ()) -> tuple[str, ...]:
    return (*_method(cfg, fusion, overlap), *_dtypes(cfg), *_features(cfg, routing), *_layout(cfg, sequence_shards),
            *_compiler(cfg, compiler))


def _method(cfg: ModelConfig, fusion: str, overlap: tuple[str, ...] = ()) -> list[str]:
    hidden = (f"; the strategy's {' and '.join(overlap)}s run under two micro-batches' compute (each one's under "
              "the other's): a step counts only what of them outlasts its kernels, the rest of its communication "
              "is not overlapped" if overlap else "; communication is not overlapped with compute")
    experts = f", routed experts {cfg.experts}" if cfg.is_moe else ""
    return [f"model: {cfg.total_params / 1e9:.4g}B parameters, {cfg.active_params / 1e9:.4g}B active per token "
            f"(embedding lookup excluded); weights {cfg.weights}{experts}, KV cache {cfg.kv}, activations {cfg.dtype}",
            "loop bodies (lax.scan over layers) are weighted by their trip counts; cost_analysis counts them once",
            "collective wire bytes use ring formulas: all-reduce 2(n-1)/n x V, all-gather, reduce-scatter and "
            "all-to-all (n-1)/n x V; inside a scale-up domain each call takes what a measured 8-GPU all-reduce "
            "sending as many bytes takes (with --ideal: NVLink bandwidth plus 1 us an algorithm step), across "
            f"domains the per-GPU network NIC's rate plus 5 us a call{hidden}",
            "attention core counted as a fused flash kernel: scores stay on chip",
            "HBM bytes as serving engines' fused kernels move them (tracer/read/fusion.py: merged QKV and gate/up "
            "projections, rope, activations and router weights in matmul epilogues, the MoE gather and scatter-add "
            "in the grouped matmuls, residual add with RMSNorm); the compiled program's own bytes are "
            "`hbm_bytes_compiled` (--fusion compiled prices those)" if fusion == "kernels" else
            "HBM bytes as the compiled program's own kernels move them (--fusion compiled); serving engines fuse "
            "more (--fusion kernels)",
            "analytic HBM bytes count weights and KV cache only; prefill also moves activations (B x P x hidden per "
            "tensor), which is most of its bytes",
            "slices of stacked weights/caches and layout-only copies are read in place by their consumer, as GPU "
            "and TPU compilers do"]


def _dtypes(cfg: ModelConfig) -> list[str]:
    out = []
    stored = {cfg.weights, cfg.attn_weights, cfg.experts}
    if stored & {"float8", "int8"}:
        out.append("fp8/int8 weights run as W8A8 matmuls at the chip's fp8/int8 peak, activations quantized on the "
                   "fly; their per-channel or block scales (under 0.1% of the bytes) are not modelled")
    if "mxfp4" in stored:
        out.append("MXFP4 weights are read at 4.25 bits per value (4-bit e2m1 plus one 8-bit scale per 32) and "
                   "converted inside the matmul, which runs in bf16 (W4A16)")
    if "nvfp4" in stored:
        how = ("activations quantized to FP4 on the fly, the matmul at the chip's FP4 peak (W4A4)" if
               cfg.fp4_activations else "converted inside the matmul, which runs in bf16 (W4A16): this chip has no "
               "FP4 tensor cores")
        out.append(f"NVFP4 weights are read at 4.5 bits per value (4-bit e2m1 plus one e4m3 scale per 16; the "
                   f"per-tensor f32 scale is negligible); {how}")
    if "int4" in stored:
        out.append(f"int4 weights (AWQ/GPTQ style, W4A16) are read at {cfg.bits('int4'):.3g} bits per value (4-bit "
                   f"integers plus one 16-bit scale and one 4-bit zero point per group of {cfg.int4_group}) and "
                   "converted inside the matmul, which runs in bf16")
    if cfg.kv != cfg.dtype:
        out.append(f"KV cache stored in {cfg.kv}: read and written at its own width")
    return out


def _features(cfg: ModelConfig, routing: str) -> list[str]:
    out = []
    if cfg.is_moe:
        out.append(f"MoE: tokens grouped per batch shard (merged across the experts' devices when a few tokens per "
                   f"device would leave most expert slots empty); each expert computes only the tokens routed to "
                   f"it, in slots of capacity factor {cfg.capacity_factor:g} (see `moe` per phase); when a device "
                   "has no more tokens than experts, a gathered-rows kernel computes each token with its own "
                   "experts' weights (decode): FLOPs follow active parameters, weight bytes the experts a device "
                   "holds")
        out.append("routed experts' weights are read once per expert the step's tokens reach, as a grouped kernel "
                   "reads them: E (1 - (1 - k/E)^T) of E for T tokens under uniformly random routing (the program "
                   "itself reads one per slot or row; `hbm_bytes_compiled`)" if routing == "uniform" else
                   "routed experts' weights are read as the program computes them: min(E, T x k) experts for T "
                   "tokens, every assignment to an expert of its own (--routing worst)")
    if cfg.is_mla:
        out.append("MLA decode in the absorbed form: the latent cache (kv_lora_rank + rope values per token and "
                   "layer) is read, not per-head K and V; it has no head axis, so each device of a tensor-parallel "
                   "group holds its sequences' whole latent cache, and the latent down-projections are replicated")
    if cfg.index_topk:
        out.append(f"sparse attention (DeepSeek's lightning indexer): decode scores every cached token's index key "
                   f"({cfg.index_dim} fp8 values and a scale a token and layer) and reads the latent rows of the "
                   f"{cfg.index_topk} it picks alone; prefill scores every causal pair and attends under a mask of "
                   f"the chosen keys, so past {cfg.index_topk} prompt tokens its attention FLOPs are the dense pairs', "
                   "an upper bound on the sparse kernel's; the indexer's projections are whole on every device of a "
                   "tensor-parallel group, as engines replicate them")
    if cfg.has_linear:
        out.append(f"linear-attention (Gated DeltaNet) layers, {cfg.linear_layers} of {cfg.n_layers}: a fixed state "
                   f"per sequence ({cfg.state_bytes_per_sequence / 1e6:.3g} MB: each value head's key x value matrix "
                   f"in {cfg.state_dtype}, and the convolution's last inputs) instead of a KV cache; decode reads and "
                   "writes it whole; prefill runs the chunked form of flash-linear-attention (chunks of 64 tokens, "
                   "a triangular solve within each, the state passed from chunk to chunk)")
    if any(cfg.window_pattern) and cfg.chunked:
        out.append("chunked-attention layers keep min(chunk, context) positions as a ring; prefill attends within "
                   "each chunk, causally; decode reads the whole ring (an upper bound past the first chunk)")
    elif any(cfg.window_pattern):
        out.append("sliding-window layers keep min(window, context) positions as a ring; prefill attends in bands "
                   "of the window (about 2 x window keys per query, as a banded flash kernel does)")
    return out


def _layout(cfg: ModelConfig, sequence_shards: int) -> list[str]:
    if sequence_shards <= 1:
        return []
    latent = " (MLA: the latent, expanded on each device)" if cfg.is_mla else ""
    return [f"context parallel over {sequence_shards} devices: prompt and cache positions striped (position "
            f"p on device p mod {sequence_shards}), so causal prefill work is balanced; prefill all-gathers "
            f"each layer's keys and values{latent}; decode attends over each device's own slots and "
            "all-reduces the softmax statistics and partial outputs (flash decoding across devices)"
            + ("; linear-attention layers are not split along the sequence: the compiler gathers it, and each "
               "device runs their recurrence whole" if cfg.has_linear else "")]


def _compiler(cfg: ModelConfig, compiler: str) -> list[str]:
    """What each compiler's program implies for the figures (tracer.quirks)."""
    return list(QUIRKS[compiler].notes(cfg.dtype))
