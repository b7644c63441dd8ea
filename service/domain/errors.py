"""Refusals a decider can give: what was refused and why, never how a protocol reports it. The API
layer maps each kind to its HTTP status (service/api/errors.py: `domain_error_response`)."""


class DomainError(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


class NotFound(DomainError):
    def __init__(self, kind: str, id_: str):
        super().__init__(f"No {kind} found with id '{id_}'.")


class InvalidRequest(DomainError):
    """The command does not apply to the object as it is."""


class Conflict(DomainError):
    """Others are changing the object at the same moment: the same command may succeed if retried."""
