"""Wraps every FaceService call: authenticate the API key, then turn any failure into a status.

Health checking and reflection stay open: load balancers and grpcurl call them without a key.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from visio_grpc.api.errors import abort_internal, abort_with_error
from visio_grpc.domain.errors import RequestUndecodable, VisioError
from visio_grpc.domain.keys import KeyService

log = logging.getLogger(__name__)

PROTECTED_PREFIX = "/visio.v1."

_current_owner: contextvars.ContextVar[str] = contextvars.ContextVar("visio_owner")


def current_owner() -> str:
    """The owner of the API key of the call being served."""
    return _current_owner.get()


def _authorization(context: grpc.aio.ServicerContext) -> str | None:  # type: ignore[type-arg]
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode("utf-8", "replace")
    return None


class _Undecodable:
    """Stands in for a request that failed to parse, so the failure gets our error shape."""


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # gRPC would answer UNKNOWN with the parser's exception text (e.g. a non-UTF-8 path parameter
    # arriving through the gateway); decode here and let the call handler report it.
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError:
            return _Undecodable()

    return deserialize


class ApiInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, keys: KeyService) -> None:
        self._keys = keys

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None or not method.startswith(PROTECTED_PREFIX):
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._guard(method, handler.unary_unary),
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )

    def _guard(self, method: str, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:  # type: ignore[type-arg]
            try:
                key = await self._keys.authenticate(_authorization(context))
                if isinstance(request, _Undecodable):
                    raise RequestUndecodable()
                token = _current_owner.set(key.owner)
                try:
                    return await behavior(request, context)
                finally:
                    _current_owner.reset(token)
            except VisioError as error:
                await abort_with_error(context, error)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                # Our fault: log everything under an id, tell the caller only the id.
                request_id = secrets.token_hex(8)
                log.exception("request_id=%s method=%s failed", request_id, method)
                await abort_internal(context, request_id)

        return guarded
