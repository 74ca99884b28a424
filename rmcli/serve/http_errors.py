"""The service's expected failures: :class:`ServeError` (a status and one line), the status
every other :class:`rmcli.RmcliError` is answered with, and the JSON body of every error."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rmcli.errors import InputError, RmcliError, TooLargeError, UsageError

if TYPE_CHECKING:
    from starlette.responses import JSONResponse

PATH = re.compile(r"(?<![\w/:.~-])/[^\s'\",;()]+")


class ServeError(RmcliError):
    """An expected failure answered with ``status`` and a one-line reason."""

    def __init__(
        self, status: int, reason: str, retry_after: int | None = None, tag: str = ""
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.retry_after = retry_after
        self.tag = tag  # for metrics: why a 503 was given (queue_full, deadline)

    def __reduce__(self) -> tuple:
        """Pickled whole: a Dask worker's refusal reaches the front end as the same error."""
        return type(self), (self.status, str(self), self.retry_after, self.tag)


def status_of(exc: Exception) -> tuple[int, str]:
    """The HTTP status and one-line reason for an expected failure."""
    from rmcli.errors import BackendError, ModelError

    if isinstance(exc, ServeError):
        return exc.status, str(exc)
    if isinstance(exc, TooLargeError):
        return 422, str(exc)
    if isinstance(exc, InputError):
        return 400, str(exc)
    if isinstance(exc, UsageError):
        return 400, str(exc)
    if isinstance(exc, ModelError | BackendError):
        return 503, str(exc)
    return 400, str(exc)


def error_response(
    status: int, reason: str, retry_after: int | None = None, close: bool = False
) -> JSONResponse:
    """``{"error": reason}`` with ``status`` (file paths cut), Retry-After and Connection: close
    when asked."""
    from starlette.responses import JSONResponse  # Dask workers import this module, not Starlette

    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    if close:
        headers["Connection"] = "close"
    return JSONResponse({"error": without_paths(reason)}, status_code=status, headers=headers)


def without_paths(reason: str) -> str:
    """``reason`` with every absolute file path cut to its last part (``…/name``): answers
    never show where the server keeps its files."""
    return PATH.sub(lambda m: "…/" + m[0].rstrip("/.").rpartition("/")[2], reason)
