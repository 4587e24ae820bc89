"""One error hierarchy for the whole project.

Every error a user can cause carries an HTTP status, so the CLI prints it as one clear
line and the server maps it to a response in one place.
"""

from __future__ import annotations

from http import HTTPStatus


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
