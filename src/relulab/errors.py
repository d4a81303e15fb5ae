"""The one exception type for mistakes in what the user asked for.

A :class:`UserError` is a bad name, value or file: the command line prints its first line and
exits with status 2. Any other exception is a bug in relulab and keeps its traceback. It
subclasses ValueError so that ``except ValueError`` in user code keeps catching bad input.
"""


class UserError(ValueError):
    """Bad input from the user (a name, a value, a file); its message says what and why."""
