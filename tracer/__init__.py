"""tracer: what an LLM's input and output tokens cost to serve, read off compiled programs.

`tracer.trace(model=..., system=..., strategy=..., batch=..., prompt=..., context=...)` mirrors `tracer trace`.
"""

__all__ = ["trace", "get_model", "ConfigError"]


def __getattr__(name):  # lazy, so that models/ and meshes/ can import tracer.errors without a cycle
    if name == "trace":
        from tracer.api import trace

        return trace
    if name == "get_model":  # a preset or a model file (.toml, Hugging Face config.json) as a ModelConfig
        from models.config import get_model

        return get_model
    if name == "ConfigError":
        from tracer.errors import ConfigError

        return ConfigError
    raise AttributeError(name)
