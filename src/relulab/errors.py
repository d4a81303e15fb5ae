"""The exception types for what the user asked for, as opposed to bugs.

A :class:`UserError` is a bad name, value or file; a :class:`TrainingDiverged` is a training
whose loss became NaN or infinite (too high a learning rate, say). The command line prints
either's first line and exits with status 2. Any other exception is a bug in relulab and keeps
its traceback. UserError subclasses ValueError so that ``except ValueError`` in user code keeps
catching bad input.
"""


class UserError(ValueError):
    """Bad input from the user (a name, a value, a file); its message says what and why."""


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: a result of the settings, not a bug."""
