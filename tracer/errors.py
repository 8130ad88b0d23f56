"""The one error type for bad input: its message names the fix; the CLI prints it on one line and exits 2."""


class ConfigError(ValueError):
    pass


class DoesNotFit(ConfigError):
    """The target's compiler refused the program: its buffers exceed the chip's memory (the TPU compiler checks)."""

    def __init__(self, message: str, temp_bytes: float):
        super().__init__(message)
        self.temp_bytes = temp_bytes
