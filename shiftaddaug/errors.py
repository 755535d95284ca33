"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (missing data, unknown name, bad config, corrupt checkpoint)."""
