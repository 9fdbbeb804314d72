"""Stripe-shaped API errors: ``{"error": {"type", "message", "param", "code", ...}}``."""

from __future__ import annotations

from typing import Any


class SimAPIError(Exception):
    """An error answer the simulator sends exactly as Stripe would."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        decline_code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        commit: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.decline_code = decline_code
        self.extra = extra or {}
        self.headers = headers or {}
        #: Keep what the request wrote before failing (a declined payment still records
        #: its failed charge and events, as Stripe does); otherwise it is rolled back.
        self.commit = commit

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        if self.decline_code:
            error["decline_code"] = self.decline_code
        if request_id:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}?t=0"
        error.update(self.extra)
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> SimAPIError:
    return SimAPIError(400, message, param=param, code=code)


def missing(obj_id: str, *, param: str = "id", kind: str = "object") -> SimAPIError:
    return SimAPIError(
        404,
        f"No such {kind}: '{obj_id}'",
        code="resource_missing",
        param=param,
    )


def required(param: str) -> SimAPIError:
    return SimAPIError(
        400, f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def unknown_param(param: str) -> SimAPIError:
    return SimAPIError(
        400, f"Received unknown parameter: {param}", code="parameter_unknown", param=param
    )
