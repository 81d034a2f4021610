"""The inference gateway's exceptions, in one place; each is a `covey.errors.CoveyError`.

Each carries the HTTP status and the OpenAI error `type` (and `code`) it is answered with:

* CoveyError
  + GatewayError - 500 server_error
  | + InvalidRequestError - 400 invalid_request_error: a malformed request, or one the model cannot serve
  | + ModelNotFoundError - 404 model_not_found: no consensus model with this id is served here
  | + NoHostAvailableError - 503 no_host_available: every host of the model is down or failed the request
  | + HostError - 502 host_error: one host failed a request; the router fails over to the next
  + PaymentError (covey.errors)
    + X402Error - the payment layer's own tree, in `covey.gateway.x402.errors`
"""

from __future__ import annotations

from covey.errors import CoveyError


class GatewayError(CoveyError):
    """Base of the inference gateway's errors; `openai_type` and `code` fill the OpenAI error object."""

    http_status = 500
    openai_type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidRequestError(GatewayError):
    """The request body is malformed or asks for something the model cannot do (HTTP 400)."""

    http_status = 400
    openai_type = "invalid_request_error"


class ModelNotFoundError(GatewayError):
    """No consensus model with this id is served here (HTTP 404, code `model_not_found`)."""

    http_status = 404
    openai_type = "invalid_request_error"
    code = "model_not_found"


class NoHostAvailableError(GatewayError):
    """Every host serving the model is down, unhealthy or failed this request (HTTP 503)."""

    http_status = 503
    openai_type = "server_error"
    code = "no_host_available"


class HostError(GatewayError):
    """One host failed a request (unreachable, timed out, broke the stream, answered junk); the router fails over."""

    http_status = 502
    openai_type = "server_error"
    code = "host_error"
