"""Errors the command line reports as one clear line, without a traceback."""


class UserFacingError(Exception):
    """An error whose message is the whole story for the person at the terminal."""
