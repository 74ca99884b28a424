"""The one exception family for expected failures.

The CLI root turns an :class:`RmcliError` into one line on stderr and its ``exit_code``:
0 all good, 1 some inputs failed, 2 usage or configuration error, 130 interrupted.
"""

from __future__ import annotations

EXIT_INPUT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class RmcliError(Exception):
    """An expected failure that the user can act on; the message is the whole story."""

    exit_code = EXIT_USAGE


class UsageError(RmcliError):
    """A bad name, flag or argument (unknown model or backend, bad value)."""


class ConfigError(RmcliError):
    """A configuration file or setting that cannot be used."""


class ModelError(RmcliError):
    """Model weights that cannot be fetched, verified or loaded."""


class BackendError(RmcliError):
    """An execution backend that cannot build a session as asked."""


class InputError(RmcliError):
    """One input that cannot be processed; a batch reports it and goes on."""

    exit_code = EXIT_INPUT_FAILED


class TooLargeError(InputError):
    """An input, or its output, over a size limit (pixels, decompression bomb, format)."""
