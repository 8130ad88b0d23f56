"""The one error type for bad input (its message names the fix; the CLI prints it on one line and exits 2), TOML
reading, and the checks of sizes and numbers every input layer runs."""

import math


class ConfigError(ValueError):
    pass


def read_toml(path: str, where: str, hint: str = "") -> dict:
    """A TOML file's table; a missing or malformed file is a ConfigError naming `where` (and, when missing, `hint`)."""
    import tomllib
    from pathlib import Path

    if Path(path).exists() and not Path(path).is_file():  # a FIFO would block
        raise ConfigError(f"{where} is not a regular file{hint}")
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{where} not found{hint}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be read; fix the file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{where} is not valid TOML: {str(err).splitlines()[0]}") from None


def is_int(value) -> bool:
    """An integer, not a bool (true is an int to Python, never a size to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite real number, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
