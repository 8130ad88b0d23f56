"""Derive a rates file's [moe] table from AIConfigurator's measured MoE latencies (meshes/rates/*.toml say which).

    python benchmarks/moe_rates.py PATH/TO/moe_perf.parquet --peak-bf16 989e12 --hbm-bw 3.35e12
    python benchmarks/moe_rates.py PATH/TO/moe_perf.parquet --peak-bf16 2250e12 --peak-fp4 13000e12 --hbm-bw 8e12

Needs pandas and pyarrow (not dependencies of tracer: the table is derived once and committed). The parquet files
are in github.com/ai-dynamo/aiconfigurator under aic-core/src/aiconfigurator_core/systems/data/<chip>/moe/trtllm/.

What it measures: TRT-LLM's fused MoE op (routing excluded; permute, both grouped GEMMs with the gated activation,
and the weighted unpermute included), on one GPU (moe_tp = moe_ep = 1), tokens spread evenly over the experts
("balanced"). For each row, the op's roofline at the datasheet figures:

    roofline = max(2 x tokens x topk x 3 x hidden x inter / peak,
                   (experts touched x 3 x hidden x inter x bytes a weight + tokens x topk x hidden x 4) / HBM bw)
    fraction = roofline / measured latency

(experts touched: min(experts, tokens x topk), as the balanced distribution spreads them), and the table holds,
at each point of the grid of tokens per expert (tokens x topk / experts), the median fraction over the measured
rows within a factor sqrt(2) of it. Each shape and token count keeps its fastest kernel (the engine picks its
best); the non-gated kernel is left out (no model here has one) and so is TRT-LLM's min-latency kernel, whose
timings stream the weights faster than the HBM can (up to 13 TB/s on a B200's 8 TB/s: weights left in L2 between
repetitions, which a served step does not see).

Rows, by how the model's compiled program holds the expert weights and computes them (tracer.timing):
- bfloat16: bf16 weights, bf16 FLOPs (AIConfigurator bfloat16);
- float8: fp8 weights and FLOPs (fp8, per-tensor scales; block-scaled FP8 runs slower on Hopper and faster or slower
  by the tokens an expert on Blackwell, as the rates files' [moe] sources say: --block-fp8 prints it);
- float4: NVFP4 weights and FLOPs (nvfp4; Blackwell only), at --peak-fp4 (4 x bf16 on B200 and GB200; Blackwell
  Ultra's is 5.8-6 x);
- w4a16: 4-bit weights with 16-bit activations, FLOPs priced at the bf16 peak: w4a16_mxfp4 on Hopper; on
  Blackwell TRT-LLM runs MXFP4 experts as w4a8_mxfp4_mxfp8 (FP8 tensor cores), so its fractions (of the bf16
  roofline the model prices them at) come from that kernel, and may exceed 1.
"""

import argparse

import numpy as np
import pandas as pd

GRID = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
BYTES = {"bfloat16": 2.0, "fp8": 1.0, "fp8_block": 1.0, "nvfp4": 0.5 + 1 / 16, "w4a16_mxfp4": 0.5 + 1 / 32,
         "w4a8_mxfp4_mxfp8": 0.5 + 1 / 32}  # bytes a weight, block scales included
PEAK = {"bfloat16": 1, "fp8": 2, "fp8_block": 2, "nvfp4": 4, "w4a16_mxfp4": 1, "w4a8_mxfp4_mxfp8": 1}  # x bf16


def fractions(path: str, peak_bf16: float, hbm_bw: float, peak_fp4: float | None = None) -> dict[str, list]:
    d = pd.read_parquet(path)
    d = d[(d.moe_tp_size == 1) & (d.moe_ep_size == 1) & (d.distribution == "balanced")
          & ~d.kernel_source.isin(["moe_torch_flow_nongated", "moe_torch_flow_min_latency"])]
    shape = ["moe_dtype", "num_tokens", "hidden_size", "inter_size", "num_experts", "topk"]
    d = d.groupby(shape, as_index=False).latency.min()
    assignments = d.num_tokens * d.topk
    weights = 3 * d.hidden_size * d.inter_size
    peaks = {k: x * peak_bf16 for k, x in PEAK.items()} | ({"nvfp4": peak_fp4} if peak_fp4 else {})
    flops_s = 2 * assignments * weights / d.moe_dtype.map(peaks)
    bytes_s = (np.minimum(d.num_experts, assignments) * weights * d.moe_dtype.map(BYTES)
               + assignments * d.hidden_size * 4) / hbm_bw
    d = d.assign(m=assignments / d.num_experts, fraction=np.maximum(flops_s, bytes_s) / (d.latency * 1e-3))
    out = {}
    for dtype, rows in d.groupby("moe_dtype"):
        out[dtype] = [(round(float(b.fraction.median()), 3) if len(b) else None, len(b))
                      for b in (rows[(rows.m >= g / 2 ** 0.5) & (rows.m < g * 2 ** 0.5)] for g in GRID)]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("parquet")
    p.add_argument("--peak-bf16", type=float, required=True, help="the chip's dense bf16 FLOP/s (meshes.systems)")
    p.add_argument("--peak-fp4", type=float, help="its dense fp4 FLOP/s (meshes.systems; default 4 x --peak-bf16)")
    p.add_argument("--hbm-bw", type=float, required=True, help="its HBM bytes/s (meshes.systems)")
    p.add_argument("--block-fp8", action="store_true", help="also print block-scaled FP8 (fp8_block)")
    a = p.parse_args()
    table = fractions(a.parquet, a.peak_bf16, a.hbm_bw, a.peak_fp4)
    blackwell = "nvfp4" in table
    rows = {"bfloat16": "bfloat16", "float8": "fp8", "float4": "nvfp4",
            "w4a16": "w4a8_mxfp4_mxfp8" if blackwell else "w4a16_mxfp4"}
    if a.block_fp8:
        rows["float8_block"] = "fp8_block"
    print("[moe]")
    print(f"m = {GRID}")
    for name, source in rows.items():
        if source not in table:
            continue
        points = table[source]
        last = next(f for f, _ in reversed(points) if f is not None)  # flat past the last measured point
        values, filled = [], last
        for f, _ in reversed(points):
            filled = f if f is not None else filled
            values.append(filled)
        print(f"{name} = {list(reversed(values))}  # {source}; rows a point: {[n for _, n in points]}")


if __name__ == "__main__":
    main()
