"""Errors a user can act on. The CLI turns them into clean messages without a traceback."""
from __future__ import annotations


class MeshdreamError(RuntimeError):
    """A failure with a message meant for the user (CLI: exit code 1, no traceback)."""


class UserInputError(MeshdreamError, ValueError):
    """Bad input: names the bad value and what is allowed (CLI: usage error, exit code 2)."""


class CheckpointError(MeshdreamError):
    """A checkpoint that is missing, corrupted or made by an incompatible run."""
