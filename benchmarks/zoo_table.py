"""Print the README's model-zoo table: each preset traced at batch 64, context 4096 (Kimi K2 and K2.5 at batch 4608
on the rack), the compiled figures against the analytic estimate, and token costs. About 5-10 min on a 2-core machine:
    python benchmarks/zoo_table.py
"""

import tracer  # noqa: F401  (sets the emulated device count before jax starts)
from tracer.api import trace

RUNS = (("mixtral-8x7b", "h100x8", "tp-ep", 64), ("qwen3-30b-a3b", "h100x8", "tp-ep", 64),
        ("qwen3-235b-a22b", "h200x8", "tp-ep", 64), ("gpt-oss-20b", "h100x8", "tp-ep", 64),
        ("gpt-oss-120b", "h100x8", "tp-ep", 64), ("deepseek-v3", "h200x8", "tp-ep", 64),
        ("kimi-k2", "gb200-nvl72", "ep", 4608), ("llama3-70b", "h100x8", "tp", 64),
        ("qwen2.5-72b", "h100x8", "tp", 64), ("qwen3-32b", "h100x8", "tp", 64),
        ("mistral-large-2", "h200x8", "tp", 64), ("mistral-nemo", "h100x1", "tp", 64),
        ("gemma2-27b", "h100x8", "tp", 64), ("gemma3-27b", "h100x8", "tp", 64), ("phi-4", "h100x2", "tp", 64),
        ("deepseek-v2", "h200x8", "tp-ep", 64), ("deepseek-v2-lite", "h100x1", "tp", 64),
        ("glm-4.5", "h200x8", "tp-ep", 64), ("llama4-scout", "h100x8", "tp-ep", 64),
        ("llama4-maverick", "h200x8", "tp-ep", 64), ("minimax-m2", "h200x8", "tp-ep", 64),
        ("qwen3-next-80b-a3b", "h100x8", "tp-ep", 64), ("deepseek-v3.2", "h200x8", "tp-ep", 64),
        ("kimi-k2.5", "gb200-nvl72", "ep", 4608), ("qwen3.5-397b-a17b", "h200x8", "tp-ep", 64))

print("| model | system, strategy | prefill FLOPs / analytic | decode bytes / analytic | input USD/Mtok "
      "| output USD/Mtok | output / input | largest batch |")
print("|---|---|---|---|---|---|---|---|")
for model, system, strategy, batch in RUNS:
    r = trace(model=model, system=system, strategy=strategy, batch=batch, context=4096)
    pre, dec = r.phases["prefill"], r.phases["decode"]
    flops = pre.step.cost.flops / pre.analytic.flops_per_device
    hbm = dec.step.cost.hbm_bytes / dec.analytic.hbm_bytes_per_device
    print(f"| {model} | {system}, {strategy} | {flops:.3f} | {hbm:.3f} | {pre.usd_per_mtok:.3f} | "
          f"{dec.usd_per_mtok:.3f} | {dec.usd_per_mtok / pre.usd_per_mtok:.2f} | {r.max_batch} |", flush=True)
