"""The one error table: sentiserve errors <-> HTTP statuses <-> gRPC codes, both ways."""

from __future__ import annotations

from http import HTTPStatus

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from sentiserve import errors
from sentiserve.errors import (
    ERROR_TABLE,
    BadGatewayError,
    DeadlineExceededError,
    InvalidInputError,
    ModelControlDisabledError,
    ModelNotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    SentiserveError,
    UnauthorizedError,
    UnavailableError,
    from_grpc_code,
    grpc_code,
)
from sentiserve.serve.plane.triton import map_error


def test_every_row_names_a_real_grpc_code_and_its_own_status() -> None:
    for kind in ERROR_TABLE:
        assert kind.grpc_code in grpc.StatusCode.__members__, kind
        assert kind.error("x").status == kind.status, kind


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (InvalidInputError("x"), 400, "INVALID_ARGUMENT"),
        (UnauthorizedError("x"), 401, "UNAUTHENTICATED"),
        (ModelControlDisabledError("x"), 403, "PERMISSION_DENIED"),
        (ModelNotFoundError("x"), 404, "NOT_FOUND"),
        (PayloadTooLargeError("x"), 413, "RESOURCE_EXHAUSTED"),
        (QueueFullError("x"), 503, "UNAVAILABLE"),
        (UnavailableError("x"), 503, "UNAVAILABLE"),
        (DeadlineExceededError("x"), 504, "DEADLINE_EXCEEDED"),
        (BadGatewayError("x"), 502, "UNKNOWN"),
        (SentiserveError("x"), 500, "INTERNAL"),
        (errors.DataUnavailableError("x"), 503, "UNAVAILABLE"),
        (errors.ConfigError("x"), 400, "INVALID_ARGUMENT"),
        (errors.RepositoryError("x"), 503, "UNAVAILABLE"),
    ],
)
def test_server_side_status_and_code(error: SentiserveError, status: int, code: str) -> None:
    assert error.status == HTTPStatus(status)
    assert grpc_code(error) == code


@pytest.mark.parametrize(
    ("status", "kind", "http"),
    [
        ("StatusCode.UNAVAILABLE", UnavailableError, 503),
        ("StatusCode.DEADLINE_EXCEEDED", DeadlineExceededError, 504),
        ("StatusCode.RESOURCE_EXHAUSTED", QueueFullError, 503),
        ("StatusCode.NOT_FOUND", ModelNotFoundError, 404),
        ("StatusCode.INVALID_ARGUMENT", InvalidInputError, 400),
        ("StatusCode.UNAUTHENTICATED", UnauthorizedError, 401),
        ("StatusCode.INTERNAL", SentiserveError, 500),
        ("StatusCode.DATA_LOSS", UnavailableError, 503),
    ],
)
def test_triton_errors_map_back_through_the_table(status: str, kind: type, http: int) -> None:
    """The gateway reads the table backwards, with tritonclient's real exception type."""
    mapped = map_error(InferenceServerException("it failed", status=status), "sentiment")
    assert type(mapped) is kind
    assert mapped.status == http
    assert mapped.message.startswith("sentiment: ")
    assert mapped.message.endswith("it failed")


def test_an_error_without_a_status_is_triton_unavailable() -> None:
    mapped = map_error(OSError("connection refused"), "sentiment")
    assert isinstance(mapped, UnavailableError)
    assert "Triton is unavailable" in mapped.message


def test_a_code_round_trips_for_every_error_the_reverse_direction_picks() -> None:
    for kind in ERROR_TABLE:
        back = from_grpc_code(kind.grpc_code, "m")
        assert grpc_code(back) in (kind.grpc_code, "UNAVAILABLE")
