"""The one exception type the CLI turns into a single ``ERROR: ...`` line and exit status 2."""


class UserError(Exception):
    """Bad input that the user can fix: the message is the whole story, no traceback."""
