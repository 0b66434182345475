"""One exception type for problems a user can fix (bad config, data, checkpoint).

The CLI turns a :class:`UserError` into a one-line message and exit code 2, with no traceback.
"""


class UserError(Exception):
    """An input problem the user can fix; the message names the field or file."""
