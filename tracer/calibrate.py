"""`tracer calibrate --out FILE`: measure a chip's achieved rates with JAX on the local accelerator and write them
as a rates file (tracer.rates), which `--calibration FILE` then prices with.

What it runs (each timed as the best of several runs after a warm-up, results blocked on):
- matmul: an (M, K) x (K, N) GEMM for each M of the grid, N = K (8192; --quick 256), in bfloat16 and, where the
  device runs it, float8 (e4m3) with a bfloat16 result: achieved FLOP/s over the precision's dense peak;
- memory: y = x + 1 over a large array (1 GiB; --quick 8 MiB), read once and written once: bytes / s over the
  datasheet bandwidth;
- attention, decode: one query per sequence over a cache of C positions (einsum, softmax, einsum): the cache's bytes
  / s over the datasheet bandwidth; prefill: causal jax.nn.dot_product_attention: FLOPs / s over the bf16 peak;
- kernel floor: a chain of tiny matmuls that no compiler fuses: seconds per kernel;
- collectives, with more than one device: psum over every device at a small and a large size, seconds per call.
What it cannot measure keeps the chip's published figure, and the file says so: collectives on one device, and the
per-iteration overhead (a serving engine's host work, not a kernel's).
The chip's peaks come from its system (meshes.systems): found from the device's name (NVIDIA H100, H200, B200,
GB200, B300, GB300), or named with --chip (any system name or chip key, e.g. h200; on CPU this is how a test run
picks the peaks).
"""

import datetime
import time
from pathlib import Path

from base.inputs import ConfigError
from meshes.systems import FAMILIES, SYSTEMS, Chip, get_system
from tracer.rates import Rates, load_rates, rates_file

FULL = {"m": (1, 16, 64, 256, 1024, 4096, 16384), "nk": 8192, "memory": 1 << 30, "decode": (64, 4096, 8, 128),
        "prefill": (1, 4096, 32, 128), "floor": 256, "collective": (1 << 12, 1 << 28), "runs": 10}
QUICK = {"m": (1, 16, 64), "nk": 256, "memory": 8 << 20, "decode": (4, 256, 2, 64), "prefill": (1, 256, 2, 64),
         "floor": 16, "collective": (1 << 10, 1 << 20), "runs": 3}
# parts of JAX's device_kind ("NVIDIA H100 80GB HBM3", "NVIDIA GB200", "NVIDIA B300 SXM6 AC", ...) -> chip key,
# tried in order: GB200 before B200 and GB300 before B300, whose names are inside theirs
KEYS = {"H100": "h100", "H200": "h200", "GB200": "gb200", "B200": "b200", "GB300": "gb300", "B300": "b300"}


def _chip(name: str | None, device_kind: str) -> Chip:
    if name:
        return get_system(FAMILIES.get(name, name)).chip
    for part, key in KEYS.items():
        if part in device_kind.upper():
            return get_system(f"{key}x1").chip
    raise ConfigError(f"the device is {device_kind!r}, whose peaks tracer does not know; name the chip whose peaks "
                      f"to divide by with --chip (e.g. --chip h200; systems: {', '.join(SYSTEMS)})")


def _best(fn, *args, runs: int) -> float:
    """Seconds of fn(*args), the best of `runs` after a warm-up."""
    import jax

    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


def _matmul(chip: Chip, dtype: str, sizes: dict) -> list[float] | None:
    import jax
    import jax.numpy as jnp

    stored = {"bfloat16": jnp.bfloat16, "float8": jnp.float8_e4m3fn}[dtype]
    nk = sizes["nk"]
    gemm = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.bfloat16))
    out = []
    try:
        for m in sizes["m"]:
            a = jnp.ones((m, nk), stored)
            b = jnp.ones((nk, nk), stored)
            out.append(2 * m * nk * nk / _best(gemm, a, b, runs=sizes["runs"]) / chip.flops_for(dtype))
    except Exception:  # the device (or its compiler) does not run this precision's GEMM
        return None
    return out


def _memory(chip: Chip, sizes: dict) -> float:
    import jax
    import jax.numpy as jnp

    x = jnp.ones((sizes["memory"] // 2,), jnp.bfloat16)
    return 2 * sizes["memory"] / _best(jax.jit(lambda v: v + 1), x, runs=sizes["runs"]) / chip.hbm_bw


def _attention(chip: Chip, sizes: dict) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    b, c, h, d = sizes["decode"]
    q = jnp.ones((b, h, d), jnp.bfloat16)
    kv = jnp.ones((b, c, h, d), jnp.bfloat16)

    def decode(q, k, v):
        s = jnp.einsum("bhd,bchd->bhc", q, k) / d ** 0.5
        return jnp.einsum("bhc,bchd->bhd", jax.nn.softmax(s, axis=-1), v)

    decode_s = _best(jax.jit(decode), q, kv, kv + 1, runs=sizes["runs"])
    b, s, h, d = sizes["prefill"]
    x = jnp.ones((b, s, h, d), jnp.bfloat16)
    prefill = jax.jit(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True))
    prefill_s = _best(prefill, x, x, x, runs=sizes["runs"])
    flops = 4 * b * h * d * s * (s + 1) / 2  # QK^T and PV over the causal half
    return flops / prefill_s / chip.flops_for("bfloat16"), 2 * kv.nbytes / decode_s / chip.hbm_bw


def _floor(sizes: dict) -> float:
    import jax
    import jax.numpy as jnp

    n = sizes["floor"]

    def chain(x):
        for _ in range(n):
            x = jnp.tanh(x @ x)  # a GEMM each: a kernel of its own, never fused with the next
        return x

    return _best(jax.jit(chain), jnp.ones((16, 16), jnp.float32), runs=sizes["runs"]) / n


def _collectives(sizes: dict) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """(operand bytes, seconds per call) of an all-reduce over every device, at a small and a large size."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    n = len(jax.devices())
    if n < 2:
        return None
    mesh = Mesh(jax.devices(), ("d",))

    def timed(nbytes: int) -> float:
        x = jax.device_put(jnp.ones((n, nbytes // 2), jnp.bfloat16), NamedSharding(mesh, PartitionSpec("d")))
        f = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, "d"), mesh=mesh, in_specs=PartitionSpec("d"),
                                  out_specs=PartitionSpec("d")))
        return _best(f, x, runs=sizes["runs"])

    small, large = sizes["collective"]
    return (float(small), float(large)), (timed(small), max(timed(large), timed(small)))


def calibrate(out: str, chip_name: str | None = None, quick: bool = False) -> Rates:
    """Measure, write `out` (a rates file) and return what it holds."""
    import os

    import jax

    folder = Path(out).resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK) or Path(out).is_dir():
        raise ConfigError(f"--out {out}: cannot write a file there (checked before measuring); name a file in a "
                          "writable folder")
    device = jax.devices()[0]
    chip = _chip(chip_name, device.device_kind)
    sizes = QUICK if quick else FULL
    published = load_rates(rates_file(chip.rates), chip.name) if chip.rates and rates_file(chip.rates).exists() \
        else None
    rows = {dtype: row for dtype in ("bfloat16", "float8") if (row := _matmul(chip, dtype, sizes)) is not None}
    if "bfloat16" not in rows:
        raise ConfigError(f"a bfloat16 GEMM did not run on {device.device_kind}; nothing to calibrate")
    prefill, decode = _attention(chip, sizes)
    measured = f"tracer calibrate on {len(jax.devices())} x {device.device_kind} ({device.platform}), " \
               f"{datetime.date.today().isoformat()}{' (--quick)' if quick else ''}"
    collectives = _collectives(sizes)
    kept = f"not measurable here: {published.path if published else 'no published file, the ideal model assumed'}"
    # with neither a measurement nor a published file: the ideal model's assumed latency of a step, and said so
    up = collectives or ((published.scale_up_bytes, published.scale_up_s) if published
                         else ((1.0,), (chip.scale_up_latency,)))
    out_link = (published.scale_out_fraction, published.scale_out_latency_s) if published else \
        (1.0, chip.scale_out_latency)
    rates = Rates(chip.name, measured, out, tuple(float(m) for m in sizes["m"]),
                  {k: tuple(v) for k, v in rows.items()}, _memory(chip, sizes), prefill, decode, _floor(sizes),
                  *up, *out_link, published.overhead_s if published else 0.0,
                  {"matmul": f"measured: N = K = {sizes['nk']}, {measured}", "memory": f"measured: {measured}",
                   "attention": f"measured: decode {sizes['decode']}, prefill {sizes['prefill']} (batch, length, "
                                f"heads, head dim), {measured}",
                   "kernel": f"measured: a chain of {sizes['floor']} 16x16 GEMMs, {measured}",
                   "collectives": (f"scale-up measured (psum over {len(jax.devices())} devices); scale-out "
                                   if collectives else "") + kept,
                   "iteration": f"a serving engine's host work, {kept}"},
                  per_sequence_s=published.per_sequence_s if published else 0.0)
    try:
        Path(out).write_text(rates.to_toml(), encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"--out {out}: {err.strerror or err}; the measurements are lost, run it again with a "
                          "writable file") from None
    return load_rates(out, chip.name)
