"""Time the real prefill and decode steps of a model on one GPU, to hold against `tracer trace --system h200x1`.

Run on a machine with a GPU (random bf16 weights; nothing is downloaded):
    python benchmarks/gpu_step_times.py --model llama3-8b --batch 64 --context 8192 --prefill-batch 8 --prompt 2048
and compare with
    tracer trace --model llama3-8b --system h200x1 --batch 64 --context 8192 --prompt ...
"""

import argparse
import time
from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx

from models.files import get_model
from models.transformer import Transformer, decode, empty_cache, prefill


def timed(fn, *args, reps: int):
    out = fn(*args)  # compile and warm up
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(reps):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / reps, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama3-8b")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=8192)
    ap.add_argument("--prefill-batch", type=int, default=8)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    cfg = get_model(args.model)
    print(jax.devices()[0].device_kind, "jax", jax.__version__)
    graphdef, weights = nnx.split(Transformer(cfg, nnx.Rngs(0)))

    run = jax.jit(partial(prefill, graphdef=graphdef, capacity=args.prompt))
    tokens = jnp.ones((args.prefill_batch, args.prompt), jnp.int32)
    secs, out = timed(run, weights, tokens, reps=max(args.reps // 3, 2))
    print(f"prefill batch {args.prefill_batch} prompt {args.prompt}: {secs * 1e3:.2f} ms")
    del out

    cache = jax.jit(lambda: empty_cache(cfg, args.batch, args.context))()
    step = jax.jit(partial(decode, graphdef=graphdef), donate_argnums=1)
    tokens = jnp.ones((args.batch,), jnp.int32)
    positions = jnp.full((args.batch,), args.context - 1, jnp.int32)
    logits, cache = step(weights, cache, tokens, positions)
    jax.block_until_ready(cache)
    start = time.perf_counter()
    for _ in range(args.reps):
        logits, cache = step(weights, cache, tokens, positions)
    jax.block_until_ready(cache)
    secs = (time.perf_counter() - start) / args.reps
    print(f"decode batch {args.batch} context {args.context}: {secs * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
