"""The one place where domain errors become gRPC statuses (and, through Envoy, HTTP responses).

Every status carries a google.rpc.ErrorInfo (stable reason, domain, metadata); client mistakes
about one field also carry a google.rpc.BadRequest. Where the HTTP status we promise differs from
Envoy's fixed code-to-status table, trailing metadata asks the gateway to use ours.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from visio_grpc.domain import errors as e
from visio_grpc.gateway import HTTP_STATUS_METADATA_KEY  # the contract with envoy.yaml's Lua filter

INTERNAL_REASON = "INTERNAL"
INTERNAL_MESSAGE = "Something went wrong on our side; it has been logged with request id {request_id}."

_BAD, _AUTH, _NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.NOT_FOUND

# (gRPC code, HTTP status through the gateway) for each meaning.
STATUS_OF: dict[type[e.VisioError], tuple[grpc.StatusCode, int]] = {
    e.ApiKeyMissing: (_AUTH, 401),
    e.ApiKeyInvalid: (_AUTH, 401),
    e.ApiKeyRevoked: (_AUTH, 401),
    e.ApiKeyNotFound: (_NOT_FOUND, 404),
    e.FaceNotFound: (_NOT_FOUND, 404),
    e.FaceIdInvalid: (_BAD, 400),
    e.RequestUndecodable: (_BAD, 400),
    e.FieldMissing: (_BAD, 400),
    e.RequestBodyInvalid: (_BAD, 400),
    e.PageSizeInvalid: (_BAD, 400),
    e.PageTokenInvalid: (_BAD, 400),
    e.NoFace: (_BAD, 400),
    e.MultipleFaces: (_BAD, 400),
    e.FaceTooSmall: (_BAD, 400),
    e.ImageEmpty: (_BAD, 400),
    e.ImageCorrupt: (_BAD, 400),
    e.ImageTooLarge: (_BAD, 413),
    e.ImageTooManyPixels: (_BAD, 413),
    e.ImageNotRecognized: (_BAD, 415),
    e.ImageUnsupportedFormat: (_BAD, 415),
    e.ServiceOverloaded: (grpc.StatusCode.UNAVAILABLE, 503),
    e.WorkerRestarted: (grpc.StatusCode.UNAVAILABLE, 503),
    e.ProcessingTimeout: (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
}

# Envoy's own mapping (convert_grpc_status); only differences need the override header.
_ENVOY_HTTP_STATUS = {
    _BAD: 400, _AUTH: 401, _NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def status_of(error: e.VisioError) -> tuple[grpc.StatusCode, int]:
    for cls in type(error).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return grpc.StatusCode.INTERNAL, 500


def to_status(error: e.VisioError) -> status_pb2.Status:
    code, _ = status_of(error)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=e.ERROR_DOMAIN, metadata=error.metadata))]
    if error.field is not None and code == _BAD:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=error.field, description=error.message, reason=error.reason
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


def internal_status(request_id: str) -> status_pb2.Status:
    info = error_details_pb2.ErrorInfo(
        reason=INTERNAL_REASON, domain=e.ERROR_DOMAIN, metadata={"request_id": request_id}
    )
    request_info = error_details_pb2.RequestInfo(request_id=request_id)
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=INTERNAL_MESSAGE.format(request_id=request_id),
        details=[_pack(info), _pack(request_info)],
    )


async def abort_with_error(context: grpc.aio.ServicerContext, error: e.VisioError) -> None:  # type: ignore[type-arg]
    code, http_status = status_of(error)
    status = rpc_status.to_status(to_status(error))
    trailing = tuple(status.trailing_metadata)
    if _ENVOY_HTTP_STATUS.get(code) != http_status:
        trailing += ((HTTP_STATUS_METADATA_KEY, str(http_status)),)
    await context.abort(status.code, status.details, trailing_metadata=trailing)


async def abort_internal(context: grpc.aio.ServicerContext, request_id: str) -> None:  # type: ignore[type-arg]
    status = rpc_status.to_status(internal_status(request_id))
    await context.abort(status.code, status.details, trailing_metadata=status.trailing_metadata)
