"""The base of every user-facing error: its message says what is wrong and how to fix it, and is shown as is."""


class UserError(Exception):
    """An error caused by the user's input or environment (bad file, absurd parameter, missing data, full disk).

    Front ends (the CLI, the app) catch `UserError` and show its message without a traceback; anything else is a bug.
    """


class ConfigError(ValueError, UserError):
    """A model configuration that cannot be built safely."""
