"""Exceptions that carry a message meant for the user.

The CLI turns a :class:`UsageError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback (shown with ``--debug``).
"""


class EllrobustError(Exception):
    """Base class of every error ellrobust raises on purpose."""


class UsageError(EllrobustError):
    """Bad input from the user: the message names the problem and how to fix it."""


class CheckpointError(UsageError):
    """A checkpoint that cannot be loaded safely or does not fit the architecture."""
