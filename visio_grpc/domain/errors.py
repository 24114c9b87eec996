"""Domain errors: one class per meaning, each with a stable reason code and a fix-it message.

The API layer maps each class to a gRPC code and HTTP status in one place (api/errors.py).
"""

from __future__ import annotations

ERROR_DOMAIN = "visio.dev"

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF")


class VisioError(Exception):
    """A failure the caller can understand: a stable `reason`, a message, and its values."""

    reason = "UNKNOWN"

    def __init__(self, message: str, *, field: str | None = None, **metadata: object) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.metadata: dict[str, str] = {k: str(v) for k, v in metadata.items()}
        if field is not None:
            self.metadata.setdefault("field", field)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Engine workers raise these in another process; subclasses' __init__ signatures differ,
        # so pickling goes through one generic constructor.
        return (_rebuild, (type(self), self.message, self.field, self.metadata))


# --- authentication ---------------------------------------------------------------------------


class ApiKeyMissing(VisioError):
    reason = "API_KEY_MISSING"
    MESSAGE = "No API key: send it in the Authorization header (raw key or 'Bearer <key>')."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class ApiKeyInvalid(VisioError):
    reason = "API_KEY_INVALID"
    MESSAGE = "The API key is not valid: check it was copied whole, or create one with 'visio keys create'."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class ApiKeyRevoked(VisioError):
    reason = "API_KEY_REVOKED"
    MESSAGE = "The API key {prefix} has been revoked: create a new one with 'visio keys create'."

    def __init__(self, prefix: str) -> None:
        super().__init__(self.MESSAGE.format(prefix=prefix), key_prefix=prefix)


class ApiKeyNotFound(VisioError):
    """Raised by key administration (revoke) for an unknown prefix."""

    reason = "API_KEY_NOT_FOUND"
    MESSAGE = "No API key has the prefix {prefix!r}: 'visio keys list' shows the prefixes."

    def __init__(self, prefix: str) -> None:
        super().__init__(self.MESSAGE.format(prefix=prefix), key_prefix=prefix)


# --- resources and requests -------------------------------------------------------------------


class FaceNotFound(VisioError):
    reason = "FACE_NOT_FOUND"
    MESSAGE = "No face with id {face_id!r} exists for this API key: list your faces with ListFaces (GET /v1/faces)."

    def __init__(self, face_id: str, *, field: str | None = None) -> None:
        super().__init__(self.MESSAGE.format(face_id=face_id), field=field, face_id=face_id)


class FaceIdInvalid(VisioError):
    reason = "FACE_ID_INVALID"
    MESSAGE = (
        "{field!r} is {length} characters long, but face ids have at most {maximum}: "
        "use an id returned by CreateFace (POST /v1/faces)."
    )

    def __init__(self, field: str, length: int, maximum: int) -> None:
        super().__init__(self.MESSAGE.format(field=field, length=length, maximum=maximum), field=field, length=length, maximum=maximum)


class RequestUndecodable(VisioError):
    """The request message itself could not be decoded (e.g. a path parameter that is not UTF-8)."""

    reason = "REQUEST_UNDECODABLE"
    MESSAGE = "The request could not be decoded: ids, text fields and query parameters must be valid UTF-8 text."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class FieldMissing(VisioError):
    reason = "FIELD_MISSING"
    MESSAGE = "The request has no {field!r} field: {hint}"

    def __init__(self, field: str, hint: str) -> None:
        super().__init__(self.MESSAGE.format(field=field, hint=hint), field=field)


class RequestBodyInvalid(VisioError):
    """The REST body is not the multipart/form-data the call expects."""

    reason = "REQUEST_BODY_INVALID"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="body")


class PageSizeInvalid(VisioError):
    reason = "PAGE_SIZE_INVALID"
    MESSAGE = "page_size must be between 0 and {maximum} (0 means the default), got {value}."

    def __init__(self, value: int, maximum: int) -> None:
        super().__init__(self.MESSAGE.format(value=value, maximum=maximum), field="page_size", maximum=maximum)


class PageTokenInvalid(VisioError):
    reason = "PAGE_TOKEN_INVALID"
    MESSAGE = "page_token is not one this server issued: pass next_page_token from the previous page unchanged."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE, field="page_token")


# --- faces in images --------------------------------------------------------------------------


class NoFace(VisioError):
    reason = "NO_FACE"
    MESSAGE = "No face was found in {field!r}: send a photo with one clear, roughly frontal face."

    def __init__(self, field: str) -> None:
        super().__init__(self.MESSAGE.format(field=field), field=field, face_count=0)


class MultipleFaces(VisioError):
    reason = "MULTIPLE_FACES"
    MESSAGE = "{count} faces were found in {field!r}, but this call needs exactly one: crop the photo to one face."

    def __init__(self, field: str, count: int) -> None:
        super().__init__(self.MESSAGE.format(field=field, count=count), field=field, face_count=count)


class FaceTooSmall(VisioError):
    reason = "FACE_TOO_SMALL"
    MESSAGE = (
        "The face in {field!r} is {size} px wide, below the minimum of {minimum} px that gives a reliable "
        "descriptor: send a larger or closer photo."
    )

    def __init__(self, field: str, size: int, minimum: int) -> None:
        super().__init__(
            self.MESSAGE.format(field=field, size=size, minimum=minimum),
            field=field,
            face_size=size,
            min_face_size=minimum,
        )


# --- image bytes ------------------------------------------------------------------------------


class ImageEmpty(VisioError):
    reason = "IMAGE_EMPTY"
    MESSAGE = "{field!r} is empty (0 bytes): attach the image file itself."

    def __init__(self, field: str) -> None:
        super().__init__(self.MESSAGE.format(field=field), field=field)


class ImageTooLarge(VisioError):
    reason = "IMAGE_TOO_LARGE"
    MESSAGE = "{field!r} is {size} bytes, above the limit of {limit} bytes per image: send a smaller file."

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(
            self.MESSAGE.format(field=field, size=size, limit=limit), field=field, size_bytes=size, max_bytes=limit
        )


class ImageTooManyPixels(VisioError):
    reason = "IMAGE_TOO_MANY_PIXELS"
    MESSAGE = (
        "{field!r} is {width}x{height} pixels, above the limit of {limit} pixels: "
        "resize it below the limit before uploading."
    )

    def __init__(self, field: str, width: int, height: int, limit: int) -> None:
        super().__init__(
            self.MESSAGE.format(field=field, width=width, height=height, limit=limit),
            field=field,
            width=width,
            height=height,
            max_pixels=limit,
        )


class ImageNotRecognized(VisioError):
    reason = "IMAGE_NOT_RECOGNIZED"
    MESSAGE = "{field!r} is not an image in any format we know. Accepted formats: {accepted}."

    def __init__(self, field: str) -> None:
        accepted = ", ".join(ACCEPTED_FORMATS)
        super().__init__(self.MESSAGE.format(field=field, accepted=accepted), field=field, accepted=accepted)


class ImageUnsupportedFormat(VisioError):
    reason = "IMAGE_UNSUPPORTED_FORMAT"
    MESSAGE = "{field!r} is a {detected} image, which is not supported. Accepted formats: {accepted}."

    def __init__(self, field: str, detected: str) -> None:
        accepted = ", ".join(ACCEPTED_FORMATS)
        super().__init__(
            self.MESSAGE.format(field=field, detected=detected, accepted=accepted),
            field=field,
            detected_format=detected,
            accepted=accepted,
        )


class ImageCorrupt(VisioError):
    reason = "IMAGE_CORRUPT"
    MESSAGE = "{field!r} looks like {detected} but cannot be decoded ({problem}): upload the complete, undamaged file."

    def __init__(self, field: str, detected: str, problem: str) -> None:
        super().__init__(
            self.MESSAGE.format(field=field, detected=detected, problem=problem),
            field=field,
            detected_format=detected,
            problem=problem,
        )


class WorkerRestarted(VisioError):
    """An engine worker process died while this photo was being processed; a new one was started."""

    reason = "WORKER_RESTARTED"
    MESSAGE = "The worker processing this photo stopped unexpectedly and has been replaced: retry the call."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class ProcessingTimeout(VisioError):
    """A worker spent longer than the configured limit on one photo and was replaced."""

    reason = "PROCESSING_TIMEOUT"
    MESSAGE = "Processing the photo took longer than {seconds:g} s, so it was stopped: retry, or send a smaller photo."

    def __init__(self, seconds: float) -> None:
        super().__init__(self.MESSAGE.format(seconds=seconds), timeout_s=seconds)


class ServiceOverloaded(VisioError):
    reason = "SERVICE_OVERLOADED"
    MESSAGE = "The server has too many images waiting to be processed: retry in a moment."

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


def _rebuild(cls: type[VisioError], message: str, field: str | None, metadata: dict[str, str]) -> VisioError:
    error = cls.__new__(cls)
    VisioError.__init__(error, message, field=field, **{k: v for k, v in metadata.items() if k != "field"})
    error.metadata = dict(metadata)
    return error

