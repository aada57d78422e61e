"""The one exception type for bad user input.

Anything raised as ``UserInputError`` is the user's to fix (a config key, a
file, a name); the command line prints its message as one ``error:`` line and
exits with status 2 instead of a traceback. Bugs stay ordinary exceptions.
"""

import sys


class UserInputError(ValueError):
    """Bad input: a wrong name, value, file or combination of settings."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite (names the epoch and batch)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message names the last checkpoint and how to resume."""


def run_cli(action):
    """Run a command's ``action()``; return its exit status.

    Bad input prints one ``error:`` line and gives 2, a diverged training 3,
    Ctrl-C one line (the last checkpoint and how to resume, when training) and
    130; anything else is a bug and keeps its traceback.
    """
    try:
        action()
    except Interrupted as interrupted:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    return 0
