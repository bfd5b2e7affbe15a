"""Every error a user can cause, in one place. The CLI prints any :class:`XInstructError` as one line
(``error: ...``) with exit code 2; ``--debug`` shows the traceback instead."""

from __future__ import annotations


class XInstructError(Exception):
    """Base of the errors whose message says what to change (a recipe, data, a server, a command line)."""


class UsageError(XInstructError, ValueError):
    """A command line that cannot be run as given (a missing or contradictory option)."""


class RecipeError(XInstructError, ValueError):
    """A recipe that cannot be used as written; the message says what to change."""


class DataError(XInstructError, ValueError):
    """Input data that cannot be read as asked (missing file, malformed line, missing field)."""


class UnknownLanguageError(XInstructError, ValueError):
    """A language code that is neither built in nor registered by the recipe."""


class ModelError(XInstructError, ValueError):
    """A model that cannot be found or loaded as named."""


class StageError(XInstructError, RuntimeError):
    """A stage cannot go on with the data it has; the message says what to change."""


class PublishError(XInstructError, ValueError):
    """A run or repo that cannot be published as asked; the message says what to do."""


class EndpointError(XInstructError, RuntimeError):
    """An endpoint call cannot complete; the message says what the server answered and what to change."""


class RunDirError(DataError):
    """A run directory without the recipe or the finished step a command reads (every command that reads a run,
    publishing included, raises this one class)."""
