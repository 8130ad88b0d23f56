"""What both model file formats share: the example file errors point to, and the checks their values get."""

from base.inputs import ConfigError
from models.config import ModelConfig

EXAMPLE = "models/examples/custom.toml"


def one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def build(make, where: str) -> ModelConfig:
    """Run the constructor; ModelConfig's own checks (and any type slip they meet) become one-line ConfigErrors."""
    try:
        return make()
    except (TypeError, ValueError) as e:  # ConfigError is a ValueError
        raise ConfigError(f"{where}: {one_line(e)}") from None


def is_type(value, hint) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def describe(hint, plural: bool = False) -> str:
    one = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    many = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}
    return (many if plural else one).get(hint, "values" if plural else "a value")
