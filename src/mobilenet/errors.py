"""The one exception the CLI turns into a single line instead of a traceback."""


class MobileNetError(Exception):
    """Bad input from the user: a wrong argument, a missing or corrupt file.

    The message is one line that names the thing and says what would work.
    """
