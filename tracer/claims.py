"""`tracer report claims --out DIR`: the seed argument, each claim checked from compiled programs.

The argument (the README's mission; "How to Scale Your Model", inference chapter): prefill is compute-bound, so
input tokens cost what the ACTIVE parameters cost; decode streams every weight and the whole KV cache of every
sequence each step, and HBM caps the batch, so output tokens cost what TOTAL parameters and context cost.

The data is one sweep (cached like any other): the model zoo on an 8-GPU server (HGX H200, 1.13 TB of HBM) at
three contexts, and a ~1T-parameter model against a ~235B one on a GB200 NVL72 rack (13.4 TB). Every point is
decoded at the largest batch that fits, the cheapest way to serve it. Each claim's verdict is computed from those
rows by a function of the rows alone, so data where the claim fails reads "does not hold".
"""

from tracer.sweep import Point

SERVER, RACK = "h200x8", "gb200-nvl72"
CONTEXTS = (8192, 32768, 131072)
PROMPT = 4096  # prefill tokens per sequence at every point: input cost is compared at one prompt length
DENSE = ("llama3-8b", "llama3-70b", "llama3-405b")
MOE = ("mixtral-8x7b", "qwen3-30b-a3b", "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "deepseek-v3", "kimi-k2")
LARGE, MID = "kimi-k2", "qwen3-235b-a22b"  # claim 3: ~1T total parameters against ~235B
STRATEGIES = {SERVER: {"dense": ("tp",), "moe": ("tp", "ep")}, RACK: {"moe": ("tp-ep", "ep")}}


def points() -> list[Point]:
    """The claims sweep: every model on the server, the claim-3 pair on the rack; each strategy that suits the
    model, at each context, at the largest batch that fits (the cheapest strategy is kept per point)."""
    out = []
    for system, models in ((SERVER, DENSE + MOE), (RACK, (LARGE, MID))):
        for model in models:
            for strategy in STRATEGIES[system]["moe" if model in MOE else "dense"]:
                out += [Point(model, system, strategy, "max", context, PROMPT) for context in CONTEXTS]
    return out
