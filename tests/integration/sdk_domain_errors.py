"""An exception class of "the user's own library", importable both in the test process and (by
path) on the endpoint's workers: remote errors of this type are raised as this type."""


class MyDomainError(Exception):
    """A domain error whose constructor takes two arguments, like many libraries' errors."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message, code)
        self.code = code
