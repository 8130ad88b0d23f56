"""Stored formats: how many bits a value of each dtype a model's tensors may be kept in takes, block scales and zero
points included, and the spellings people type for them."""

from dataclasses import dataclass

import jax.numpy as jnp


@dataclass(frozen=True)
class Format:
    """How a stored dtype holds its values: the element type, and block scales (with zero points) along a matmul
    weight's contracted axis, applied inside the matmul."""

    element: object  # jnp dtype of the values
    block: int = 0  # values per block scale (0: none, or per-channel/128x128 scales too small to count)
    scale: object = None  # jnp dtype of the block scales
    zero: object = None  # jnp dtype of per-block zero points (asymmetric int4)
    w4a4: bool = False  # activations quantized to the element type too (NVFP4 on chips with FP4 tensor cores)

    @property
    def bits(self) -> float:
        """Stored bits per value, block scales and zero points included."""
        extra = sum(dtype_bits(d) for d in (self.scale, self.zero) if d is not None)
        return dtype_bits(self.element) + (extra / self.block if self.block else 0)


def dtype_bits(dtype) -> int:
    """Bits a value of a jnp dtype takes in HBM (numpy keeps 4-bit types in a byte each; the chip packs two)."""
    dtype = jnp.dtype(dtype)
    return 4 if dtype in (jnp.float4_e2m1fn, jnp.int4, jnp.uint4) else 8 * dtype.itemsize

INT4_GROUP = 128  # AWQ and GPTQ's usual group size; a checkpoint's own is read from its file (ModelConfig.int4_group)
# Stored dtypes a tensor group may use (sources: OCP MX spec for MXFP4; NVIDIA's NVFP4 blog and ModelOpt; AutoAWQ and
# GPTQ checkpoint layouts for int4):
# - mxfp4: 4-bit e2m1 values plus one 8-bit power-of-two scale (e8m0) per 32 values: 4.25 bits;
# - nvfp4: e2m1 values plus one e4m3 scale per 16 values (and a per-tensor f32 scale, negligible): 4.5 bits;
# - int4: 4-bit integers plus one 16-bit scale and one 4-bit zero point per group of 128 (W4A16): 4.16 bits.
FORMATS = {"bfloat16": Format(jnp.bfloat16), "float32": Format(jnp.float32), "float8": Format(jnp.float8_e4m3fn),
           "int8": Format(jnp.int8), "mxfp4": Format(jnp.float4_e2m1fn, 32, jnp.float8_e8m0fnu),
           "nvfp4": Format(jnp.float4_e2m1fn, 16, jnp.float8_e4m3fn),
           "int4": Format(jnp.int4, INT4_GROUP, jnp.bfloat16, jnp.int4)}
DTYPES = {name: f.element for name, f in FORMATS.items()}
ACT_DTYPES = ("bfloat16", "float32")  # activations, embeddings, norms, router
KV_DTYPES = ("bfloat16", "float32", "float8")
VOCAB_DTYPES = ("bfloat16", "float32", "float8", "int8")  # embedding table and LM head (no block scales)
# The spellings people type (and checkpoints write), each to its canonical name.
ALIASES = {"bf16": "bfloat16", "fp16": "bfloat16", "float16": "bfloat16", "fp32": "float32", "f32": "float32",
           "fp8": "float8", "fp8_e4m3": "float8", "float8_e4m3fn": "float8", "fp4": "nvfp4"}


def canonical_dtype(name: str) -> str:
    """A dtype's canonical name from any spelling in ALIASES (fp16 is priced as bf16: the same 16 bits and peak)."""
    if not isinstance(name, str):
        return name
    key = name.strip().lower()
    return key if key in FORMATS else ALIASES.get(key, name)
