"""Derive a rates file's [matmul], [memory], [attention] and [collectives] figures from AIConfigurator's measured
GEMM, attention and all-reduce latencies (meshes/rates/b300.toml and gb300.toml say which; benchmarks/moe_rates.py
derives the [moe] table).

    python benchmarks/rates_tables.py PATH/TO/systems/data/b300_sxm --peak-bf16 2250e12 --peak-fp4 13000e12 \\
        --hbm-bw 8e12

Needs pandas and pyarrow (not dependencies of tracer: the tables are derived once and committed). DIR is a chip's
folder in github.com/ai-dynamo/aiconfigurator under aic-core/src/aiconfigurator_core/systems/data/; it must hold
gemm/trtllm/V/gemm_perf.parquet, attention/trtllm/V/{context,generation}_attention_perf.parquet,
comm/trtllm/V/custom_allreduce_perf.parquet (V: --trtllm) and comm/nccl/N/nccl_perf.parquet (N: --nccl). A folder
that holds only a reuse.yaml points at another version's data: pass that version.

What each figure is (the rules meshes/rates/b200.toml's sources state), at the chip's datasheet figures
(meshes.systems), latencies in the files in ms:
- [matmul]: TRT-LLM Linear at n = k = 8192, the fastest kernel at each m of the grid: 2 m n k / latency / the
  dense peak of bf16, fp8 (2 x bf16, per-tensor) and nvfp4 (--peak-fp4); 3 decimals (4 where 3 would read 0);
- [memory]: decode attention reading 2.1 GB of bf16 KV (32 q / 8 kv heads, head dim 128, batch 8 x 65535 cached
  tokens): its bytes / latency / HBM bandwidth;
- [attention] prefill: context attention, 32 q / 8 kv heads, head dim 128, bf16, one 16384-token prompt, causal
  FLOPs (4 s^2 heads dim / 2) / latency / bf16 peak; decode: generation attention of that head layout, bf16 KV,
  batch 64 x 4095 cached tokens, its KV bytes / latency / HBM bandwidth;
- [collectives]: an --gpus all-reduce's seconds by operand bytes (2 x the files' bf16/half element counts), the
  faster of NCCL and TRT-LLM's custom all-reduce at each size, to 0.1 us.
"""

import argparse
from pathlib import Path

import pandas as pd

MATMUL_M = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
SCALE_UP_BYTES = [256, 4096, 65536, 262144, 1048576, 4194304, 16777216, 67108864, 268435456, 536870912]
HEADS = {"num_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "window_size": 0}


def _fraction(x: float) -> float:
    return round(x, 3) or round(x, 4)


def matmul(path: Path, peak_bf16: float, peak_fp4: float) -> dict[str, tuple[list, list]]:
    """dtype -> (fractions at MATMUL_M, the latencies in ms they come from)."""
    d = pd.read_parquet(path)
    d = d[(d.n == 8192) & (d.k == 8192)]
    out = {}
    for name, dtype, peak in (("bfloat16", "bfloat16", peak_bf16), ("float8", "fp8", 2 * peak_bf16),
                              ("float4", "nvfp4", peak_fp4)):
        best = d[d.gemm_dtype == dtype].groupby("m").latency.min()
        if best.empty:
            continue
        ms = [float(best[m]) for m in MATMUL_M]
        flops = [2 * m * 8192 * 8192 for m in MATMUL_M]
        out[name] = ([_fraction(f / (t * 1e-3) / peak) for f, t in zip(flops, ms, strict=True)], ms)
    return out


def _heads(d: pd.DataFrame) -> pd.DataFrame:
    keep = pd.Series(True, index=d.index)
    for column, value in HEADS.items():
        keep &= d[column] == value
    return d[keep & (d.kv_cache_dtype == "bfloat16")]


def attention(folder: Path, peak_bf16: float, hbm_bw: float) -> dict[str, tuple[float, str]]:
    """figure -> (its value, how it was measured)."""
    c = _heads(pd.read_parquet(folder / "context_attention_perf.parquet"))
    c = c[(c.batch_size == 1) & (c.isl == 16384) & (c.attn_dtype == "bfloat16")]
    prefill_ms = float(c.latency.min())
    flops = 4 * 16384**2 * HEADS["num_heads"] * HEADS["head_dim"] / 2
    g = _heads(pd.read_parquet(folder / "generation_attention_perf.parquet"))
    out = {"prefill": (flops / (prefill_ms * 1e-3) / peak_bf16,
                       f"{prefill_ms:.5g} ms = {flops / (prefill_ms * 1e-3) / 1e12:.0f} TFLOP/s causal")}
    for name, batch, cached in (("decode", 64, 4095), ("memory", 8, 65535)):
        ms = float(g[(g.batch_size == batch) & (g.step == cached)].latency.min())
        kv = batch * cached * HEADS["num_key_value_heads"] * HEADS["head_dim"] * 2 * 2
        out[name] = (kv / (ms * 1e-3) / hbm_bw, f"batch {batch} x {cached} cached tokens: {ms:.5g} ms for "
                                               f"{kv / 1e9:.3g} GB = {kv / (ms * 1e-3) / 1e9:.0f} GB/s")
    return out


def collectives(nccl: Path, custom: Path, gpus: int) -> list[tuple[int, float, float, float]]:
    """(operand bytes, seconds a call, NCCL's ms, TRT-LLM's ms) at SCALE_UP_BYTES."""
    n = pd.read_parquet(nccl)
    n = n[(n.op_name == "all_reduce") & (n.nccl_dtype == "half") & (n.num_gpus == gpus)]
    n = n.groupby("message_size").latency.min()
    a = pd.read_parquet(custom)
    a = a[(a.num_gpus == gpus) & (a.allreduce_dtype == "bfloat16")].groupby("message_size").latency.min()
    if n.empty or a.empty:
        raise SystemExit(f"no {gpus}-GPU all-reduce in {nccl} or {custom}")
    out = []
    for size in SCALE_UP_BYTES:
        elements = size // 2
        times = [float(t[elements]) for t in (n, a) if elements in t.index]
        seconds = float(f"{round(min(times) * 1e3, 1)}e-6")  # to 0.1 us, printed as written
        out.append((size, seconds, *(float(t.get(elements, float("nan"))) for t in (n, a))))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", type=Path, help="AIConfigurator's systems/data/<chip> folder")
    p.add_argument("--peak-bf16", type=float, required=True, help="the chip's dense bf16 FLOP/s (meshes.systems)")
    p.add_argument("--peak-fp4", type=float, help="its dense fp4 FLOP/s (meshes.systems; default 4 x --peak-bf16)")
    p.add_argument("--hbm-bw", type=float, required=True, help="its HBM bytes/s (meshes.systems)")
    p.add_argument("--trtllm", default="1.3.0rc20", help="TRT-LLM version folder (default 1.3.0rc20)")
    p.add_argument("--nccl", default="2.29.2", help="NCCL version folder (default 2.29.2)")
    p.add_argument("--gpus", type=int, default=8, help="all-reduce group size (default 8)")
    a = p.parse_args()
    gemm = matmul(a.dir / "gemm/trtllm" / a.trtllm / "gemm_perf.parquet", a.peak_bf16, a.peak_fp4 or 4 * a.peak_bf16)
    print(f"[matmul]\nm = {MATMUL_M}")
    for name, (row, ms) in gemm.items():
        print(f"{name} = {row}  # ms: {[round(t, 5) for t in ms]}")
    figures = attention(a.dir / "attention/trtllm" / a.trtllm, a.peak_bf16, a.hbm_bw)
    print(f"\n[memory]\nfraction = {figures['memory'][0]:.2f}  # {figures['memory'][0]:.4f}: {figures['memory'][1]}")
    print("\n[attention]")
    for name in ("prefill", "decode"):
        print(f"{name} = {figures[name][0]:.2f}  # {figures[name][0]:.4f}: {figures[name][1]}")
    rows = collectives(a.dir / "comm/nccl" / a.nccl / "nccl_perf.parquet",
                       a.dir / "comm/trtllm" / a.trtllm / "custom_allreduce_perf.parquet", a.gpus)
    print(f"\n[collectives]\nscale_up_bytes = {[r[0] for r in rows]}\nscale_up_s = {[r[1] for r in rows]}")
    print(f"# ms (NCCL, TRT-LLM custom): {[(round(r[2], 5), round(r[3], 5)) for r in rows]}")


if __name__ == "__main__":
    main()
