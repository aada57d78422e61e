"""The one exception type for bad user input.

Anything raised as ``UserInputError`` is the user's to fix (a config key, a
file, a name); the command line prints its message as one ``error:`` line and
exits with status 2 instead of a traceback. Bugs stay ordinary exceptions.
"""


class UserInputError(ValueError):
    """Bad input: a wrong name, value, file or combination of settings."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (names the epoch and batch)."""
