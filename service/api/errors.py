"""The OpenAI error envelope, and turning every failure into it."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from service.domain.errors import Conflict, DomainError, NotFound


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type_: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type_ = status, message, param, code, type_

    def response(self) -> web.Response:
        return error_response(self.status, self.message, param=self.param, code=self.code, type_=self.type_)


def error_response(status: int, message: str, *, param=None, code=None, type_=None) -> web.Response:
    body = ErrorBody(message=message, param=param, code=code,
                     type=type_ or ("server_error" if status >= 500 else "invalid_request_error"))
    return web.Response(status=status, body=msgspec.json.encode(ErrorEnvelope(body)),
                        content_type="application/json")


# Each kind of domain refusal as HTTP reports it: the first kind the error is an instance of.
_DOMAIN_STATUS = ((NotFound, 404), (Conflict, 409), (DomainError, 400))


def domain_error_response(exc: DomainError) -> web.Response:
    status = next(status for kind, status in _DOMAIN_STATUS if isinstance(exc, kind))
    return error_response(status, exc.message, param=exc.param, code=exc.code)


def not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{id_}'.")


_PATH = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`")


def from_validation(exc: msgspec.ValidationError) -> ApiError:
    """msgspec's precise message, reworded the way OpenAI words request errors."""
    text = str(exc)
    m = _PATH.search(text)
    param = m.group("path") if m else None
    reason = text[: m.start()] if m else text
    if u := _UNKNOWN.match(reason):
        name = f"{param}.{u.group('field')}" if param else u.group("field")
        return ApiError(400, f"Unrecognized request argument supplied: {name}", param=name)
    if param:
        return ApiError(400, f"Invalid value for '{param}': {reason[0].lower()}{reason[1:]}.", param=param)
    return ApiError(400, f"Invalid request body: {reason}.")
