"""Which exception to raise: one rule for the whole package.

- Bad user input -> :class:`UserInputError`. Anything a user typed or pointed us at: the prompt, CLI
  options, config files and their values, the RUN folder and its state (missing stage, other prompt),
  a guidance model name or folder, the device. The message names the bad value and what is allowed;
  the CLI shows it as a usage error (exit code 2), without a traceback.
- A run that fails although its input was acceptable -> :class:`MeshdreamError` (or its subclass
  :class:`CheckpointError`): a non-finite loss, an empty surface, a corrupted checkpoint, a missing
  optional package or a broken installation. The message says what happened and what to try; the CLI
  shows it with exit code 1, without a traceback.
- A programming error (a caller broke a function's contract: wrong shapes, types or option names passed
  by code) -> the built-in ``ValueError`` / ``TypeError``. These are bugs, so they keep their
  traceback; never wrap them in the two classes above, and never catch them to report "bad input".
"""
from __future__ import annotations


class MeshdreamError(RuntimeError):
    """A run failure with a message meant for the user (CLI: exit code 1, no traceback)."""


class UserInputError(MeshdreamError, ValueError):
    """Bad input: names the bad value and what is allowed (CLI: usage error, exit code 2)."""


class CheckpointError(MeshdreamError):
    """A checkpoint that is missing, corrupted or made by an incompatible run."""


class NonFiniteStepError(MeshdreamError):
    """A step's loss came out NaN or infinite (e.g. the guidance's SDS gradient); the stage loop adds the step to
    the message."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM, e.g. by a scheduler): unwinds like Ctrl-C, so the stage loop says
    which checkpoint it kept (CLI: exit code 143, 128 + SIGTERM)."""
