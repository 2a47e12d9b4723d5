"""One exception type for every failure a user can fix, so stages can print it as one line."""


class CnnlabError(Exception):
    """A problem with input, params or environment, described in one line for the user."""
