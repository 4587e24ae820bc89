"""One error hierarchy for the whole project.

Every error a user can cause carries an HTTP status, so the CLI prints it as one clear
line and the server maps it to a response in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol


class ValidationErrors(Protocol):
    """What pydantic's ValidationError and FastAPI's RequestValidationError both have."""

    def errors(self) -> Sequence[Any]: ...


class SentiserveError(Exception):
    """Base class of every error sentiserve raises on purpose.

    Attributes:
        status: The HTTP status a server answers with when this error reaches a client.
    """

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DataError(SentiserveError):
    """A data source is missing, unreadable, or holds invalid rows."""

    status = HTTPStatus.BAD_REQUEST


class DataUnavailableError(DataError):
    """A data source cannot be reached from this machine (for example the hub is offline)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class ModelLoadError(SentiserveError):
    """A base model, checkpoint or engine file cannot be loaded."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class ExportError(SentiserveError):
    """ONNX export failed, or the exported graph disagrees with PyTorch."""


class OptimizeError(SentiserveError):
    """An optimisation step failed."""


class RepositoryError(SentiserveError):
    """A model repository or one of its versions is missing, corrupt or incomplete."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class ModelNotFoundError(RepositoryError):
    """No such model or version in the repository."""

    status = HTTPStatus.NOT_FOUND


class ConfigError(SentiserveError):
    """Invalid settings or typed configuration."""

    status = HTTPStatus.BAD_REQUEST


# --- Serving errors: what a client of the server (or of the Triton gateway) can be told. ---


class InvalidInputError(SentiserveError):
    """The request is malformed: wrong types, missing or empty texts."""

    status = HTTPStatus.BAD_REQUEST


class UnauthorizedError(SentiserveError):
    """No API key, or the wrong one."""

    status = HTTPStatus.UNAUTHORIZED


class ModelControlDisabledError(SentiserveError):
    """Loading and unloading models over the API is off (``--model-control`` turns it on)."""

    status = HTTPStatus.FORBIDDEN


class PayloadTooLargeError(SentiserveError):
    """Too many texts, or a body over the size limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class BadGatewayError(SentiserveError):
    """A backend (Triton) answered, but not with what a sentiserve model answers."""

    status = HTTPStatus.BAD_GATEWAY


class UnavailableError(SentiserveError):
    """The server cannot serve this now (shutting down, a backend unreachable); retry later
    or elsewhere."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class QueueFullError(UnavailableError):
    """The queue is full, or too many requests are in flight; retry shortly."""

    retry_after_s = 1


class DeadlineExceededError(SentiserveError):
    """A request's deadline passed before it was answered."""

    status = HTTPStatus.GATEWAY_TIMEOUT


@dataclass(frozen=True)
class ErrorKind:
    """One row of :data:`ERROR_TABLE`: an error, its HTTP status and its gRPC code.

    Attributes:
        grpc_code: A ``grpc.StatusCode`` member name (text, so this module imports no gRPC).
        forward: A server answers this error with this code.
        reverse: A client that receives this code raises this error.
    """

    status: HTTPStatus
    grpc_code: str
    error: type[SentiserveError]
    forward: bool = True
    reverse: bool = True


ERROR_TABLE = (
    ErrorKind(HTTPStatus.BAD_REQUEST, "INVALID_ARGUMENT", InvalidInputError),
    ErrorKind(HTTPStatus.UNAUTHORIZED, "UNAUTHENTICATED", UnauthorizedError),
    ErrorKind(HTTPStatus.FORBIDDEN, "PERMISSION_DENIED", ModelControlDisabledError),
    ErrorKind(HTTPStatus.NOT_FOUND, "NOT_FOUND", ModelNotFoundError),
    ErrorKind(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "RESOURCE_EXHAUSTED",
        PayloadTooLargeError,
        reverse=False,
    ),
    # gRPC servers (Triton's, and ours through maximum_concurrent_rpcs) answer
    # RESOURCE_EXHAUSTED when overloaded: a client is told to retry, not that it sent too much.
    ErrorKind(HTTPStatus.SERVICE_UNAVAILABLE, "RESOURCE_EXHAUSTED", QueueFullError, forward=False),
    ErrorKind(HTTPStatus.SERVICE_UNAVAILABLE, "UNAVAILABLE", UnavailableError),
    ErrorKind(HTTPStatus.GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED", DeadlineExceededError),
    ErrorKind(HTTPStatus.BAD_GATEWAY, "UNKNOWN", BadGatewayError),
    ErrorKind(HTTPStatus.INTERNAL_SERVER_ERROR, "INTERNAL", SentiserveError),
)
"""The one mapping between sentiserve errors, HTTP statuses and gRPC status codes, read in
both directions: :func:`grpc_code` (a server answering) and :func:`from_grpc_code` (the
gateway, a client of Triton, reading an answer)."""


def grpc_code(error: SentiserveError) -> str:
    """The gRPC status code name a server answers ``error`` with: the row of its nearest
    class in the table, else the first row with its HTTP status, else INTERNAL."""
    rows = [k for k in ERROR_TABLE if k.forward]
    for cls in type(error).__mro__:
        if cls is SentiserveError:
            break
        for kind in rows:
            if kind.error is cls:
                return kind.grpc_code
    for kind in rows:
        if kind.status == error.status:
            return kind.grpc_code
    return "INTERNAL"


def from_grpc_code(code: str, message: str) -> SentiserveError:
    """The error a client of a gRPC server raises for a status ``code`` (a
    ``grpc.StatusCode`` name); a code not in the table means the backend failed (503)."""
    for kind in ERROR_TABLE:
        if kind.reverse and kind.grpc_code == code:
            return kind.error(message)
    return UnavailableError(message)


def from_http_status(status: int, message: str) -> SentiserveError:
    """The error a client of the HTTP API raises for an error answer, through the same
    table (a status not in it is the server's failure: a plain SentiserveError)."""
    for kind in ERROR_TABLE:
        if kind.reverse and kind.status == status:
            return kind.error(message)
    if status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE:
        return PayloadTooLargeError(message)
    error = SentiserveError(message)
    error.status = HTTPStatus(status) if status in HTTPStatus._value2member_map_ else error.status
    return error


def validation_problem(exc: ValidationErrors) -> tuple[str, str]:
    """The first problem pydantic found: where (dotted location, ``body`` left out; empty
    at the root) and what."""
    errors = exc.errors()
    if not errors:
        return "", "invalid value"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return where, str(first["msg"])


def validation_message(exc: ValidationErrors) -> str:
    """The first problem pydantic found, as one line (``where: what``)."""
    where, what = validation_problem(exc)
    return f"{where}: {what}" if where else what
