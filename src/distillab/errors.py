"""One exception type for problems a user can fix (bad config, data, checkpoint).

The CLI turns a :class:`UserError` into a one-line message and exit code 2, with no traceback.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
    """An input problem the user can fix; the message names the field or file."""


def did_you_mean(word: object, candidates: "Iterable[str]", cutoff: float = 0.6) -> str:
    """``"; did you mean X?"`` for the closest of ``candidates`` to ``word`` (difflib), or ``""``."""
    import difflib

    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=2, cutoff=cutoff)
    return f"; did you mean {' or '.join(close)}?" if close else ""
