"""tracer: what an LLM's input and output tokens cost to serve, read off compiled programs.

`tracer.trace(model=..., system=..., strategy=..., batch=..., prompt=..., context=...)` mirrors `tracer trace`;
`tracer.get_model(name_or_path)` gives a model's config (a preset or a model file: .toml, Hugging Face config.json).
"""

from tracer.quiet import import_jax

import_jax()  # before anything imports it: the compiler plugins' start-up lines stay out of the output

from base.inputs import ConfigError  # noqa: E402
from models.files import get_model  # noqa: E402
from tracer.api import trace  # noqa: E402

__all__ = ["trace", "get_model", "ConfigError"]
