"""`tracer report textbook --out DIR`: the worked examples of "How to Scale Your Model" (inference chapter and
"Serving LLaMA 3-70B on TPUs"; ../shared/reference/scaling-book.md) reproduced from compiled programs.

The hardware is the book's own TPU v5e: 1.97e14 bf16 FLOP/s, 16 GB of HBM, and 8.2e11 B/s of HBM bandwidth (or
8.1e11, which the book uses in its later examples), priced at the book's GCP list figure. Each example's inputs
(parameters, KV-cache bytes per token, bytes read and FLOPs per step) are read off a program this tool compiles;
the book's arithmetic is then applied to them. Each row shows the book's printed value, the book's own arithmetic
unrounded (where it prints a rounded or inconsistent figure), ours, and the difference.

Rows marked "contrast" are not reproductions: they show what the compiled program itself says where the book's
idealisation departs from it (attention FLOPs it leaves out, a KV cache that cannot split as many ways as there are
chips).
"""

import dataclasses
import math
from dataclasses import dataclass

from meshes.strategies import get_strategy
from meshes.systems import H100, V5E, V5P, System, get_system
from models.config import ModelConfig
from models.presets import LLAMA3_70B
from models.scopes import CORE
from tracer.compile import compile_steps
from tracer.read import Cost
from tracer.step import CompiledStep, Workload
from tracer.timing import step_time

BOOK_FLOPS, BOOK_HBM = 1.97e14, 16e9
# chip: (the book's FLOP/s, its $/h on GCP in Feb 2025, its printed FLOPs per dollar, our bf16 peak)
BOOK_PRICES = {"H100": (9.9e14, 10.8, 3.3e17, H100.peak_flops["bfloat16"]),
               "TPU v5p": (4.59e14, 4.2, 3.9e17, V5P.peak_flops["bfloat16"]),
               "TPU v5e": (1.97e14, 1.2, 5.9e17, V5E.peak_flops["bfloat16"])}

# The book's models. LLaMA 2-13B (meta-llama/Llama-2-13b config.json); a 30B dense model with 100 kB of KV per
# token, which the book leaves unspecified: here 49 layers with 16 kv heads of 64 in int8 (100,352 B per token)
# and 30.0e9 parameters; the book's "model 3" and its 16-expert top-2 MoE version.
LLAMA2_13B = ModelConfig("llama2-13b", vocab_size=32000, hidden=5120, n_layers=40, n_heads=40, n_kv_heads=40,
                         head_dim=128, ffn=13824, rope_theta=10_000.0)
DENSE_30B = ModelConfig("book-30b", vocab_size=32000, hidden=6144, n_layers=49, n_heads=96, n_kv_heads=16,
                        head_dim=64, ffn=28000, weight_dtype="int8", vocab_dtype="int8", kv_dtype="float8")
MODEL_3 = ModelConfig("book-model-3", vocab_size=32128, hidden=4096, n_layers=64, n_heads=32, n_kv_heads=8,
                      head_dim=256, ffn=16384, tie_embeddings=True)
MODEL_3_MOE = dataclasses.replace(MODEL_3, name="book-model-3-moe", n_experts=16, n_active=2, expert_ffn=16384)
INT8 = dict(weights="int8", kv_cache="float8")  # the book's int8 KV cache: one byte per value (fp8 here)


def book_system(n_chips: int, hbm_bw: float = 8.2e11) -> System:
    """n TPU v5e chips with the book's figures, at the book's GCP list price."""
    chip = dataclasses.replace(V5E, name=f"TPU v5e (book, {hbm_bw:.2g} B/s)", hbm_bw=hbm_bw, hbm_bytes=BOOK_HBM,
                               peak_flops={**V5E.peak_flops, "bfloat16": BOOK_FLOPS})
    return System(f"v5e-{n_chips} (book)", chip, n_chips, n_chips, 1.20, "GCP list, Feb 2025 (the book's)",
                  f"{n_chips} TPU v5e chips with the book's figures")


@dataclass(frozen=True)
class Example:
    """One of the book's worked examples: its number ("" where the book gives none) and title."""

    number: str
    title: str

    @property
    def heading(self) -> str:
        return f"{self.number}. {self.title}" if self.number else self.title

    @property
    def short(self) -> str:
        return self.number or self.title


@dataclass(frozen=True)
class Row:
    section: Example
    measure: str  # what is measured ("step ms")
    book: float  # as the book prints it
    ours: float
    how: str  # where ours comes from
    exact: float | None = None  # the book's own arithmetic, unrounded (or with its own exact input), where it differs
    note: str = ""
    contrast: bool = False  # not a reproduction: the compiled program where the book idealises
    batch: int | None = None  # the batch it is measured at, where the example varies it

    @property
    def example(self) -> str:
        return self.section.heading

    @property
    def quantity(self) -> str:
        return self.measure if self.batch is None else f"{self.measure}, batch {self.batch}"

    @property
    def reference(self) -> float:
        return self.book if self.exact is None else self.exact

    @property
    def diff(self) -> float:
        return self.ours / self.reference - 1


LLAMA3_70B_EXAMPLES = (Example("4", "LLaMA 3-70B"), Example("5", "LLaMA 3-70B, int8, batch 32, 8k context"),
                       Example("6", "LLaMA 3-70B prefill"))


def params_by_part(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of the Flax model, by its own parameter paths: attention, feed-forward (MLP or experts),
    vocabulary (embedding and LM head), norms."""
    import jax

    from models.transformer import abstract_model

    parts = {"attention": 0, "feed-forward": 0, "vocabulary": 0, "norms and router": 0}
    for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_model(cfg)[1])[0]:
        keys = [str(getattr(p, "key", p)) for p in path]
        part = ("vocabulary" if keys[0] in ("embed", "lm_head") else "attention" if "attn" in keys
                else "feed-forward" if {"mlp", "moe", "experts", "shared"} & set(keys) and "router" not in keys
                else "norms and router")
        parts[part] += math.prod(leaf.shape)
    return parts


def _step(cfg, system, batch, context, phase="decode", strategy="tp", **dtypes) -> CompiledStep:
    cfg = cfg.with_dtypes(dtypes.get("weights"), dtypes.get("kv_cache"))
    work = Workload(batch, context, context)
    return compile_steps(cfg, system, get_strategy(strategy), work, phases=(phase,))[phase]


def _core(step: CompiledStep) -> tuple[float, float]:
    """(FLOPs, HBM bytes) of the attention core: the scores, softmax and the KV cache they read."""
    part = step.cost.by_scope().get(CORE, Cost())
    return part.flops, part.hbm_bytes


@dataclass(frozen=True)
class Terms:
    """A decode step's figures per chip, split the way the book's equation (1) splits them: the weights (bytes that
    do not grow with the batch, from two compiles), the KV cache the attention core reads, the matmul FLOPs (the
    attention core's left out), and the whole compiled step."""

    step: CompiledStep
    weights: float
    kv: float
    matmul_flops: float

    def memory_s(self, bw: float) -> float:
        return (self.weights + self.kv) / bw


def _terms(cfg, system, batch, context, **dtypes) -> Terms:
    one, two = (_step(cfg, system, b, context, **dtypes) for b in (batch, 2 * batch))
    (flops, kv), (_, kv2) = _core(one), _core(two)
    rest, rest2 = one.cost.hbm_bytes - kv, two.cost.hbm_bytes - kv2
    return Terms(one, 2 * rest - rest2, kv, one.cost.flops - flops)


def example_1() -> list[Row]:
    """LLaMA 2-13B on 8 v5e at 8192 tokens of context: the memory-only decode step, (B x KV + 26e9) / (8 x 8.2e11)."""
    ex, system = Example("1", "LLaMA 2-13B, 8 x v5e, 8k context, MHA"), book_system(8)
    book = {1: (32.7, 4.98, 200.61), 8: (79.6, 12.13, 659.30), 16: (133.2, 20.30, 787.99),
            32: (240.4, 36.65, 873.21), 64: (454.8, 69.33, 923.13), 240: (1634, 249.09, 963.53)}
    rows = []
    for batch, (mem_gb, step_ms, tps) in book.items():
        step = _step(LLAMA2_13B, system, batch, 8192)
        ms = step.cost.hbm_bytes / system.chip.hbm_bw * 1e3
        rows += [Row(ex, "total memory GB", mem_gb, 8 * (step.weight_bytes + step.kv_cache_bytes) / 1e9,
                     "8 x (weights + KV cache) per chip", batch=batch),
                 Row(ex, "step ms", step_ms, ms, "compiled HBM bytes per chip / 8.2e11 B/s", batch=batch),
                 Row(ex, "tokens/s", tps, batch / ms * 1e3, "batch / step", batch=batch)]
    return rows


def example_2() -> list[Row]:
    """A 30B dense model, int8 weights, bf16 FLOPs, 100 kB of KV per token, 8192 context, on v5e 4x4."""
    ex, system = Example("2", "30B dense, int8, v5e 4x4, 8k context"), book_system(16, 8.1e11)
    w, peak = system.chip.hbm_bw, system.chip.peak_flops["bfloat16"]
    small, large = _terms(DENSE_30B, system, 4, 8192), _terms(DENSE_30B, system, 256, 8192)
    eq1 = large.kv / w + max(large.matmul_flops / peak, large.weights / w)
    return [
        Row(ex, "KV cache per sequence MB", 819, 16 * small.step.kv_cache_bytes / 4 / 1e6,
            "16 x compiled KV cache per chip / batch",
            note="our stand-in stores 100,352 B per token (49 layers x 16 kv heads x 64 x 2, int8)"),
        Row(ex, "weights GB", 30, 16 * small.weights / 1e9, "16 x compiled bytes per step that do not grow with "
            "the batch", note="the embedding table (0.2 GB) is looked up, not read whole"),
        Row(ex, "step ms, batch 4 (memory bound)", 2.57, small.memory_s(w) * 1e3,
            "(compiled weight bytes + KV cache read) per chip / 8.1e11 B/s",
            exact=(4 * 819e6 + 30e9) / (16 * 8.1e11) * 1e3),
        Row(ex, "step ms, batch 256 (equation 1)", 21, eq1 * 1e3,
            "KV read / W + max(matmul FLOPs / bf16 peak, weights read / W), each from the compiled program",
            exact=(256 * 819e6 / (16 * 8.1e11) + 2 * 256 * 30e9 / (16 * 1.97e14)) * 1e3),
        Row(ex, "step ms, batch 256, the whole compiled step", 21, step_time(large.step, system).step_s * 1e3,
            "tracer's roofline of the compiled step", contrast=True,
            note="the compiled step also moves activations and all-reduces them over 16 chips, and its int8 "
                 "matmuls run at the int8 peak (W8A8) rather than the book's bf16"),
    ]


def example_3() -> list[Row]:
    """The book's model 3 (L=64, D=4096, F=16384, N=32, K=8, H=256, tied embeddings), int8, 128k context."""
    ex, one = Example("3", "model 3 (and its 16-expert MoE), int8, 128k context"), book_system(1, 8.1e11)
    context = 128_000  # the book's "128k"
    dense = _step(MODEL_3, one, 1, context, **INT8)
    mqa = _step(dataclasses.replace(MODEL_3, n_kv_heads=1), one, 1, context, **INT8)
    kv_token, mqa_token = dense.kv_cache_bytes / context, mqa.kv_cache_bytes / context
    hbm = 16 * BOOK_HBM  # v5e 4x4
    moe = _step(MODEL_3_MOE, one, 16, 128)  # 16 sequences reach all 16 experts (k=2): every expert is read
    experts = moe.cost.by_scope()["experts"]
    expert_flops_per_token = experts.flops / 16
    moe_core_flops, _ = _core(moe)
    active = (moe.cost.flops - moe_core_flops) / 16 / 2
    return [
        Row(ex, "parameters (billions)", 18.4, sum(params_by_part(MODEL_3).values()) / 1e9,
            "the Flax model's parameters"),
        Row(ex, "KV cache bytes per token (int8)", 262e3, kv_token, "compiled KV cache / context", exact=262_144),
        Row(ex, "KV cache per sequence GB, 128k", 33.5, kv_token * context / 1e9, "compiled KV cache"),
        Row(ex, "largest batch on 4x4 (book's arithmetic)", 7, (hbm - dense.weight_bytes) // (kv_token * context),
            "(16 x 16 GB - compiled weights) // compiled KV per sequence"),
        Row(ex, "largest batch on 4x4 with K=1", 56, (hbm - mqa.weight_bytes) // (mqa_token * context),
            "as above, compiled with one kv head", note="the book says 'about 56'"),
        Row(ex, "MoE E=16 k=2: total parameters (billions)", 212, sum(params_by_part(MODEL_3_MOE).values()) / 1e9,
            "the Flax model's parameters"),
        Row(ex, "MoE: active parameters (billions)", 31.2, active / 1e9,
            "compiled matmul FLOPs per token / 2 (attention core excluded)"),
        Row(ex, "MoE: critical batch (bf16)", 1920, BOOK_FLOPS / 8.2e11 * experts.hbm_bytes / expert_flops_per_token,
            "1.97e14 / 8.2e11 x compiled expert bytes read per step / expert FLOPs per token",
            exact=BOOK_FLOPS / 8.2e11 * 16 / 2),
    ]


def examples_4_to_6() -> list[Row]:
    """LLaMA 3-70B: its parameters and KV cache, serving at batch 32 and 8k context in int8 on v5e 4x2 and 4x4,
    and an 8192-token prefill on 16 chips at 40% MFU."""
    ex4, ex5, ex6 = LLAMA3_70B_EXAMPLES
    parts = params_by_part(LLAMA3_70B)
    eight, sixteen = book_system(8, 8.1e11), book_system(16, 8.1e11)
    terms = _terms(LLAMA3_70B, eight, 32, 8192, **INT8)
    served = terms.step
    kv_token = 8 * served.kv_cache_bytes / (32 * 8192)
    held = 8 * (served.weight_bytes + served.kv_cache_bytes)
    ms8 = terms.memory_s(eight.chip.hbm_bw) * 1e3
    wide = _step(LLAMA3_70B, sixteen, 32, 8192, **INT8)  # tp=16: 8 kv heads cannot split 16 ways
    # compiled over 8 chips, where no kv head's projection is computed twice (over 16, each of the 8 is)
    prefill = _step(LLAMA3_70B, eight, 1, 8192, phase="prefill")
    core_flops, _ = _core(prefill)
    mfu = 16 * BOOK_FLOPS * 0.4
    matmul_flops = 8 * (prefill.cost.flops - core_flops)
    applied = parts["attention"] + parts["feed-forward"]  # what multiplies every prompt token
    return [
        Row(ex4, "parameters (billions)", 70.4, sum(parts.values()) / 1e9, "the Flax model's parameters"),
        Row(ex4, "feed-forward parameters (billions)", 56.3, parts["feed-forward"] / 1e9, "its MLP weights"),
        Row(ex4, "vocabulary parameters (billions)", 2.1, parts["vocabulary"] / 1e9, "embedding + LM head"),
        Row(ex4, "attention parameters (billions)", 12, parts["attention"] / 1e9, "q, k, v, o projections"),
        Row(ex4, "KV cache bytes per token (int8)", 160e3, kv_token, "compiled KV cache / (batch x context)",
            exact=163_840),
        Row(ex4, "KV cache per sequence GB, 32k", 5.3, kv_token * 32768 / 1e9, "compiled KV cache per token x 32768",
            exact=163_840 * 32768 / 1e9),
        Row(ex5, "KV cache GB, batch 32", 41.9, 8 * served.kv_cache_bytes / 1e9, "compiled KV cache x 8 chips",
            exact=163_840 * 8192 * 32 / 1e9,
            note="the book multiplies 160 kB here; its own per-token figure (example 4) is 163,840 B"),
        Row(ex5, "weights + KV cache GB", 112, held / 1e9, "compiled arguments x 8 chips",
            exact=(70.4e9 + 163_840 * 8192 * 32) / 1e9),
        Row(ex5, "HBM needed, in 16 GB chips", 7, held / BOOK_HBM, "compiled arguments / 16 GB",
            exact=(70.4e9 + 163_840 * 8192 * 32) / BOOK_HBM),
        Row(ex5, "step ms on 4x2", 17, ms8, "(compiled weight bytes + KV cache read) per chip / 8.1e11 B/s",
            exact=112e9 / (8 * 8.1e11) * 1e3),
        Row(ex5, "step ms on 4x2, every byte of the compiled step", 17, served.cost.hbm_bytes / 8.1e11 * 1e3,
            "compiled HBM bytes per chip / 8.1e11 B/s", contrast=True,
            note="activations, residual adds and all-reduce buffers: small against bf16 weights, they are a few "
                 "percent of a step whose weights are int8"),
        Row(ex5, "tokens/s on 4x2", 1882, 32 / ms8 * 1e3, "batch / step", exact=32 / (112e9 / (8 * 8.1e11))),
        Row(ex5, "tokens/s per chip on 4x2", 235, 32 / ms8 * 1e3 / 8, "batch / step / 8",
            exact=32 / (112e9 / (8 * 8.1e11)) / 8),
        Row(ex5, "step ms on 4x4 (book's arithmetic)", 8.5, 8 * (terms.weights + terms.kv) / (16 * 8.1e11) * 1e3,
            "compiled weight and KV bytes of all 8 chips of 4x2 / (16 x 8.1e11 B/s)",
            exact=112e9 / (16 * 8.1e11) * 1e3),
        Row(ex5, "step ms on 4x4, tracer's tp=16 program", 8.5, wide.cost.hbm_bytes / 8.1e11 * 1e3,
            "compiled HBM bytes per chip / 8.1e11 B/s", contrast=True,
            note="8 kv heads over 16 chips: each chip holds its kv head's cache, so the cache is stored twice; the "
                 "book's 8.5 ms assumes it splits 16 ways"),
        Row(ex6, "prefill seconds, 8192 tokens, 16 chips, 40% MFU", 0.91, matmul_flops / mfu,
            "compiled matmul FLOPs of all chips (attention core excluded) / (16 x 1.97e14 x 0.4)",
            exact=2 * applied * 8192 / mfu,
            note=f"the book multiplies 70e9 parameters per token ({2 * 70e9 * 8192 / mfu:.4g} s); the embedding "
                 "table is a lookup and the LM head runs on the last position only, so "
                 f"{applied / 1e9:.1f}e9 multiply every token"),
        Row(ex6, "prefill seconds with the causal attention", 0.91, 8 * prefill.cost.flops / mfu,
            "all compiled FLOPs / (16 x 1.97e14 x 0.4)", contrast=True,
            note="the attention over the 8k prompt, which the book leaves out, adds this much"),
    ]


def example_7_and_critical_batch() -> list[Row]:
    """FLOPs per dollar at the book's GCP prices; the critical batch of a dense model's decode, read off compiled
    programs on a v5e and an H100 system."""
    ex7, crit = Example("7", "FLOP/s per dollar (GCP list, Feb 2025)"), Example("", "critical batch, dense bf16 decode")
    rows = [Row(ex7, f"{chip}: FLOPs per dollar", printed, ours * 3600 / price,
                "the chip's bf16 peak (meshes/systems.py) x 3600 / the book's $/h", exact=book * 3600 / price)
            for chip, (book, price, printed, ours) in BOOK_PRICES.items()]
    for name, system, book, exact in (("v5e", book_system(8), 240, BOOK_FLOPS / 8.2e11),
                                      ("H100", get_system("h100x8"), 295, 989e12 / 3.35e12)):
        terms = _terms(LLAMA2_13B, system, 8, 256)
        rows.append(Row(crit, f"{name}: batch where decode turns compute-bound", book,
                        system.chip.peak_flops["bfloat16"] / system.chip.hbm_bw * terms.weights
                        / (terms.matmul_flops / 8),
                        "peak / bandwidth x compiled weight bytes / matmul FLOPs per sequence (LLaMA 2-13B, 256 "
                        "context)", exact=exact))
    return rows


def rows() -> list[Row]:
    return [*example_1(), *example_2(), *example_3(), *examples_4_to_6(), *example_7_and_critical_batch()]
