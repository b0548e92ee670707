"""The errors both services raise at their edges."""


class ConfigError(Exception):
    """A config file or a file it names is unreadable or invalid; the message names the key."""
