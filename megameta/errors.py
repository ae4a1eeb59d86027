"""Error types that map to the CLI's exit codes.

Exit codes (the command-line contract in DESIGN.md):
  0  success
  2  bad input or config: the message names the field, file or line
  3  training stopped on a preemption signal after saving a checkpoint (requeue me)
  1  any other runtime failure
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_REQUEUE = 3


class MegaMetaError(Exception):
    """A failure with a message meant for the user (no traceback needed)."""

    exit_code = EXIT_FAILURE


class InputError(MegaMetaError):
    """Bad user input: a file, path, corpus or checkpoint that cannot be used."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A config value is missing, unknown, of the wrong type or out of range.

    The message starts with the dotted path of the field, e.g.
    ``phases[1].data.alpha: must be in (0, 1], got 1.5``.
    """
