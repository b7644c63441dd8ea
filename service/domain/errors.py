"""Refusals a decider can give. The API layer maps each to an HTTP status and the error envelope."""


class DomainError(Exception):
    status = 400

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class NotFound(DomainError):
    status = 404

    def __init__(self, kind: str, id_: str):
        super().__init__(f"No {kind} found with id '{id_}'.")


class InvalidRequest(DomainError):
    status = 400
