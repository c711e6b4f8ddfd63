"""The one exception the CLI turns into a single line instead of a traceback, and the
escaping of whatever is printed or logged."""

import unicodedata


class MobileNetError(Exception):
    """Bad input from the user: a wrong argument, a missing or corrupt file.

    The message is one line that names the thing and says what would work.
    """

    exit_code = 1


class Interrupted(MobileNetError):
    """Stopped by SIGINT or SIGTERM after saving; resumable."""

    exit_code = 130


class NotInstalled(MobileNetError):
    """An optional runtime or converter that is not installed here (or does not load)."""

    @classmethod
    def of(cls, what: str, e: ImportError, extra: str, package: str) -> "NotInstalled":
        """One line: `what` does not import (and why), and how to add its extra."""
        return cls(f"{what} is not installed or does not load ({first_line(e)}); " + install_hint(extra, package))


class BadArgument(MobileNetError):
    """Arguments that cannot go together, found after argparse: exit 2, as argparse does."""

    exit_code = 2


def install_hint(extra: str, package: str) -> str:
    """How to add an optional extra, spelled as the docs spell it."""
    return f".venv/bin/pip install -e '.[{extra}]' in the repository (or pip install {package})"


def first_line(e: Exception) -> str:
    """An exception's first line, at most 160 characters (runtimes write pages), or its
    type's name when it says nothing."""
    return (str(e).splitlines() or [type(e).__name__])[0][:160]


def _control(c: str) -> bool:
    # Cc (ESC, newline, ...), Cf (bidi overrides) and the Unicode line separators
    return unicodedata.category(c) in ("Cc", "Cf") or c in "\u2028\u2029"


def has_control(text: str) -> bool:
    """Whether `text` holds a character that a terminal or a log would act on."""
    return any(_control(c) for c in text)


def look_alike(names) -> tuple[str, str] | None:
    """Two of `names` that differ only by Unicode normalisation ("café" composed and
    decomposed): they print the same, so a class could not be told from the other."""
    seen = {}
    for name in names:
        other = seen.setdefault(unicodedata.normalize("NFC", name), name)
        if other != name:
            return other, name
    return None


def printable(text) -> str:
    """`text` with its control characters escaped (ESC -> \\x1b, newline -> \\n): names
    from files we did not write can neither drive a terminal nor forge a line of a log."""
    text = str(text)
    if not has_control(text):
        return text
    return "".join(c.encode("unicode_escape").decode("ascii") if _control(c) else c for c in text)
