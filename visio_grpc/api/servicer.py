"""The FaceService servicer: translate proto to domain, call the use case, translate back."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from visio_grpc._proto.visio.v1 import face_service_pb2 as pb
from visio_grpc._proto.visio.v1 import face_service_pb2_grpc as pb_grpc
from visio_grpc.api import convert
from visio_grpc.api.convert import RequestForm, require_id
from visio_grpc.api.interceptor import current_owner
from visio_grpc.domain.faces import FaceUseCases

Context: TypeAlias = grpc.aio.ServicerContext  # type: ignore[type-arg]


class FaceServicer(pb_grpc.FaceServiceServicer):
    def __init__(self, faces: FaceUseCases) -> None:
        self._faces = faces

    async def CreateFace(self, request: pb.CreateFaceRequest, context: Context) -> pb.Face:
        photo = RequestForm.of(request, "face").photo(form_field="face", grpc_field="image", grpc_value=request.image)
        return convert.face_to_proto(await self._faces.create(current_owner(), photo))

    async def ListFaces(self, request: pb.ListFacesRequest, context: Context) -> pb.ListFacesResponse:
        # REST clients get the bare array; the gateway moves next_page_token to a header.
        page = await self._faces.list(current_owner(), request.page_size, request.page_token)
        return pb.ListFacesResponse(
            faces=[convert.face_to_proto(face) for face in page.faces], next_page_token=page.next_page_token
        )

    async def GetFace(self, request: pb.GetFaceRequest, context: Context) -> pb.Face:
        face = await self._faces.get(current_owner(), require_id(request.id, "id"))
        return convert.face_to_proto(face)

    async def UpdateFace(self, request: pb.UpdateFaceRequest, context: Context) -> pb.Face:
        face_id = require_id(request.id, "id")
        photo = RequestForm.of(request, "face").photo(form_field="face", grpc_field="image", grpc_value=request.image)
        return convert.face_to_proto(await self._faces.update(current_owner(), face_id, photo))

    async def DeleteFace(self, request: pb.DeleteFaceRequest, context: Context) -> pb.DeleteFaceResponse:
        face_id = require_id(request.id, "id")
        await self._faces.delete(current_owner(), face_id)
        return pb.DeleteFaceResponse(id=face_id, deleted=True)

    async def CompareFaces(self, request: pb.CompareFacesRequest, context: Context) -> pb.Comparison:
        first, second = require_id(request.face_1, "face_1"), require_id(request.face_2, "face_2")
        return convert.comparison_to_proto(await self._faces.compare_faces(current_owner(), first, second))

    async def CompareImages(self, request: pb.CompareImagesRequest, context: Context) -> pb.Comparison:
        form = RequestForm.of(request, "face1", "face2")
        first = form.photo(form_field="face1", grpc_field="image_1", grpc_value=request.image_1)
        second = form.photo(form_field="face2", grpc_field="image_2", grpc_value=request.image_2)
        return convert.comparison_to_proto(await self._faces.compare_images(first, second))

    async def CompareFaceToImage(self, request: pb.CompareFaceToImageRequest, context: Context) -> pb.Comparison:
        form = RequestForm.of(request, "face_id", "face")
        face_id = form.face_id(form_field="face_id", grpc_value=request.face_id)
        photo = form.photo(form_field="face", grpc_field="image", grpc_value=request.image)
        comparison = await self._faces.compare_face_to_image(current_owner(), face_id, photo, id_field="face_id")
        return convert.comparison_to_proto(comparison)

    async def DetectFace(self, request: pb.DetectFaceRequest, context: Context) -> pb.DetectedFace:
        photo = RequestForm.of(request, "face").photo(form_field="face", grpc_field="image", grpc_value=request.image)
        size, face = await self._faces.detect(photo)
        return convert.detected_to_proto(face, size)

    async def DetectFaces(self, request: pb.DetectFacesRequest, context: Context) -> pb.DetectFacesResponse:
        photo = RequestForm.of(request, "face").photo(form_field="face", grpc_field="image", grpc_value=request.image)
        return convert.analysis_to_proto(await self._faces.detect_all(photo))
