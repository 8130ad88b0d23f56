"""What `tracer trace` runs with no options (a real model on a real system, at a serving-size workload), and the
choices the CLI and the API both offer: one place for each."""

DEFAULTS = {"model": "llama3-70b", "system": "h100x8", "strategy": "tp", "batch": 64, "context": 8192}
COMPILERS = ("cpu", "gpu", "tpu", "auto")  # tracer.compile.choose_compiler
ROUTINGS = ("uniform", "worst")  # how a step's routed experts are charged: models.moe.reached_fraction
EXECUTORS = ("local", "ray")  # where a sweep's points run: worker processes here, or tasks on Ray (tracer.ray_executor)
FUSIONS = ("kernels", "compiled")  # whose kernels move the HBM bytes: serving engines' (tracer.read.fusion) or its own
