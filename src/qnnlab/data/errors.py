"""Errors that tell the user what went wrong with a data set and how to fix it."""


class DatasetError(ValueError):
    """A data set is missing, corrupt or truncated; the message says where and what to do."""
