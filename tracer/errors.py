"""Errors of the tracer's own: a program that does not fit, a job stopped by a signal. Bad input is
base.inputs.ConfigError, re-exported here."""

from base.inputs import ConfigError

__all__ = ["ConfigError", "DoesNotFit", "Interrupted", "one_line"]


def one_line(err: BaseException) -> str:
    """An unexpected error as one line of at most 500 characters: its type and message."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"[:500]


class DoesNotFit(ConfigError):
    """The target's compiler refused the program: its buffers exceed the chip's memory (the TPU compiler checks)."""

    def __init__(self, message: str, temp_bytes: float):
        super().__init__(message)
        self.temp_bytes = temp_bytes


class Interrupted(Exception):
    """A long job stopped by SIGINT or SIGTERM after keeping what it finished: the CLI prints the message on one line
    and exits 128 + the signal's number (130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.code = 128 + signum
