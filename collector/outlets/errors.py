"""Why an enabled outlet cannot be opened at start."""

from __future__ import annotations


class OutletSettingsError(ValueError):
    """An outlet's settings were refused by its client library when it was opened (e.g. a
    ``kafka.options`` entry librdkafka does not know, or a value of the wrong kind). The
    message is one line for the user; it names the settings section."""
