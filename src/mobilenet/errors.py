"""The one exception the CLI turns into a single line instead of a traceback."""


class MobileNetError(Exception):
    """Bad input from the user: a wrong argument, a missing or corrupt file.

    The message is one line that names the thing and says what would work.
    """

    exit_code = 1


class Interrupted(MobileNetError):
    """Stopped by SIGINT or SIGTERM after saving; resumable."""

    exit_code = 130


class BadArgument(MobileNetError):
    """Arguments that cannot go together, found after argparse: exit 2, as argparse does."""

    exit_code = 2
