"""User-facing errors: the CLI turns any ``FedtwinError`` into one line on stderr and exit code 2."""


class FedtwinError(Exception):
    """Base class for errors caused by user input (configs, data, paths), not by bugs."""


class DatasetError(FedtwinError, ValueError):
    """A dataset, shard or manifest on disk is missing or does not match the expected schema."""
