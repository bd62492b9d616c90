"""One error type the CLI and every stage turn into a single clear line and a non-zero exit."""


class TracemillError(Exception):
    """A problem the user can fix: the message names the thing and the fix."""


class ParamsError(TracemillError):
    """A params.yaml value is missing, unknown or out of range; `problems` holds one line per bad key."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


class SchemaError(TracemillError):
    """A table write does not match its declared schema."""


class CorruptPartError(TracemillError):
    """A Parquet part is unreadable or does not match the checksum its shard's marker recorded."""
