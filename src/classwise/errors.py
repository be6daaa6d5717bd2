"""User-facing errors.

A :class:`ClasswiseError` carries a one-line message that names the problem and the fix. The CLI
prints it without a traceback and exits non-zero; library users can catch it.
"""


class ClasswiseError(Exception):
    """Bad input or a missing resource, with a message fit to show a user as it is."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers send) turned into an interruption: handled like Ctrl-C, exit status 143."""

    exit_code = 143
