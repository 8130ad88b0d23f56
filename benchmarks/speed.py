"""How long an answer takes, each figure as a ratio of two timings measured in this one run (issue 15):

    python benchmarks/speed.py

1. `tracer trace` (the default point: Llama 3 70B, h100x8, tp, batch 64, 8k), a whole cold process, against a bare
   jax.jit(...).lower(...).compile() of the same model's prefill and decode steps with jax's default options and
   nothing read from them (a whole process too). Reference: at most 1.2x.
2. A point from the sweep cache, in process, against the reference of 0.05 s.
3. The README's 96-point sweep, cold (about 2.5 min with --jobs 2), then again from its cache as a whole process,
   against the reference of 2 s; and cold again compiling every point (--no-derive), against the derived sweep.
4. With --serving, instead of the last: the 1,056-point serving sweep of benchmarks/serving_sweep.toml, cold, with
   --jobs 2, against 15 minutes.
5. With --claims, instead of the last: the claims sweep (`tracer report claims`), cold, --jobs 2, against 5 minutes.

Each process runs alone (the machine's other work shows up in both timings of a ratio alike).
"""

import subprocess
import sys
import tempfile
import time

BARE = """
import tracer.compile as C
from tracer.quirks import QUIRKS
import dataclasses
C.QUIRKS["cpu"] = dataclasses.replace(QUIRKS["cpu"], compile_options=())  # jax's default options
C.read_program = lambda *a, **k: None  # compile only: nothing read from the programs
from meshes.strategies import get_strategy
from meshes.systems import get_system
from models.files import get_model
from tracer.step import Workload
C.compile_steps(get_model("llama3-70b"), get_system("h100x8"), get_strategy("tp"), Workload(64, 8192, 8192))
"""

SWEEP = ("--models tiny,llama3-8b --systems h100x8,h200x8 --strategies tp,tp-dp --batches 8,16,32,64 "
         "--contexts 1024,2048,4096 --prompts 512 --jobs 2")

CACHED = """
import sys, time
from tracer import sweep
point = sweep.SweepPoint("tiny", "h100x8", "tp", 8, 64, 64)
sweep.run([point], progress=None)  # computed, or already cached
start = time.perf_counter()
for _ in range(20):
    sweep.run([point], progress=None)
print((time.perf_counter() - start) / 20)
"""


def timed(args: list[str], env: dict | None = None) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, done.stdout


def serving_sweep(env: dict, folder: str):
    """4. A 1,056-point serving sweep (benchmarks/serving_sweep.toml), cold, --jobs 2: against 15 minutes."""
    args = [sys.executable, "-m", "tracer.cli", "sweep", "benchmarks/serving_sweep.toml", "--jobs", "2", "--out",
            f"{folder}/serving"]
    seconds, out = timed(args, env)
    print(f"a {out.split()[0]}-point serving sweep, cold: {seconds / 60:.1f} min (reference: under 15 min; ratio "
          f"{seconds / 900:.2f})")


def claims_sweep(env: dict, folder: str):
    """5. The claims sweep (`tracer report claims`), cold, --jobs 2: against 5 minutes."""
    seconds, _ = timed([sys.executable, "-m", "tracer.cli", "report", "claims", "--jobs", "2", "--out",
                        f"{folder}/claims"], env)
    print(f"the claims sweep, cold, --jobs 2: {seconds / 60:.1f} min (reference: under 5 min; ratio "
          f"{seconds / 300:.2f})")


def main():
    import os

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "TRACER_CACHE": cache}
        bare, _ = timed([sys.executable, "-c", BARE], env)
        tool, _ = timed([sys.executable, "-m", "tracer.cli", "trace"], env)
        print(f"tracer trace (default point), cold process: {tool:.1f} s; bare jit+lower+compile of its two "
              f"programs: {bare:.1f} s; ratio {tool / bare:.2f}x (reference: at most 1.2x)")
        _, out = timed([sys.executable, "-c", CACHED], env)
        per_point = float(out.strip().splitlines()[-1])
        print(f"a point from the sweep cache: {per_point * 1e3:.1f} ms (reference: under 50 ms; ratio "
              f"{per_point / 0.05:.2f})")
        sweep = [sys.executable, "-m", "tracer.cli", "sweep", *SWEEP.split(), "--out", f"{cache}/results"]
        cold, _ = timed(sweep, env)
        warm, _ = timed(sweep, env)
        print(f"the README's 96-point sweep: cold {cold:.0f} s; from the cache, a whole process: {warm:.2f} s "
              f"(reference: under 2 s; ratio {warm / 2:.2f})")
        if "--serving" in sys.argv or "--claims" in sys.argv:
            for flag, run in (("--serving", serving_sweep), ("--claims", claims_sweep)):
                if flag in sys.argv:
                    run(env, cache)
            return
        every, _ = timed([*sweep, "--no-derive", "--no-cache"], env)
        print(f"the same sweep cold, compiling every point (--no-derive): {every:.0f} s; deriving inside each "
              f"program structure takes {cold / every:.2f}x that")


if __name__ == "__main__":
    main()
