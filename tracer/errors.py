"""The one error type for bad input: its message names the fix; the CLI prints it on one line and exits 2."""


class ConfigError(ValueError):
    pass
