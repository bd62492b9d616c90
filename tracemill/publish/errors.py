"""The error every publish step raises; the CLI and the stage turn it into one clear line."""

from tracemill.errors import TracemillError


class PublishError(TracemillError):
    """The publish folder could not be built, validated or pushed."""
