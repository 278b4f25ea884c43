"""User-facing errors: the CLI turns any ``FedtwinError`` into one line on stderr and exit code 2."""


class FedtwinError(Exception):
    """Base class for errors the CLI reports as one line (user input, or a run that cannot go on)."""

    exit_code = 2  # bad input; runtime failures override this with 1


class DatasetError(FedtwinError, ValueError):
    """A dataset, shard or manifest on disk is missing or does not match the expected schema."""
