"""``/v1/files``: the OpenAI Files API (upload, list, retrieve, content, delete), each
route scoped to its caller; the store and the checks are :mod:`gateway.files`.

The upload reads its body by hand once the caller is authenticated (gateway/body.py),
under its own body cap (the file limit plus multipart framing, set in gateway/app.py);
every other route keeps the general one. Its multipart body goes through Starlette's
parser with one file part and small fields, and anything malformed is a 400 in
OpenAI's shape. gateway/openapi.py documents the upload's body.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from gateway.api import PrincipalDep
from gateway.errors import InvalidRequest, PayloadTooLarge
from gateway.resources import ResourcesDep

files = APIRouter(prefix="/v1/files")

# Non-file fields are names like "batch": a kilobyte is plenty, and bounds what the
# parser holds in memory for a part that is not the file.
_MAX_FIELD_BYTES = 1024
_MAX_FIELDS = 4


async def read_upload(request: Request, max_bytes: int) -> tuple[str, str, bytes]:
    """The upload's ``purpose``, file name and file bytes. Refuses (400) anything but
    multipart/form-data, before reading a byte of it; a malformed body, or one without
    exactly one ``file`` part and a ``purpose``, is a 400 too."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Expected a multipart/form-data body with 'file' and 'purpose'.")
    parser = MultiPartParser(
        request.headers, request.stream(), max_files=1, max_fields=_MAX_FIELDS,
        max_part_size=_MAX_FIELD_BYTES,
    )  # fmt: skip
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise InvalidRequest(f"Malformed multipart body: {exc.message}") from exc
    except ClientDisconnect as exc:
        raise InvalidRequest("The client left before sending the whole body.") from exc
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise InvalidRequest("A 'file' part with the file is required.", param="file")
        if not isinstance(purpose, str):
            raise InvalidRequest("A 'purpose' field is required.", param="purpose")
        content = await upload.read(max_bytes + 1)
        if len(content) > max_bytes:
            raise PayloadTooLarge(
                f"File is larger than {max_bytes} bytes.", param="file", code="file_too_large"
            )
        return purpose, upload.filename or "", content
    finally:
        await form.close()


@files.post("")
async def upload_file(request: Request, resources: ResourcesDep, who: PrincipalDep) -> Any:
    """Upload a file (``client.files.create``): multipart ``file`` and ``purpose``."""
    limit = resources.settings.files.max_bytes
    purpose, filename, content = await read_upload(request, limit)
    return await resources.files.create(who.id, purpose, filename, content, who.may_use)


@files.get("")
async def list_files(
    resources: ResourcesDep,
    who: PrincipalDep,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> dict[str, Any]:
    """This caller's files, newest first unless ``order=asc`` (``client.files.list``)."""
    return await resources.files.list(who.id, after, limit, order, purpose)


@files.get("/{file_id}")
async def retrieve_file(file_id: str, resources: ResourcesDep, who: PrincipalDep) -> Any:
    """One of this caller's files; another caller's is the same 404 as none."""
    return await resources.files.retrieve(who.id, file_id)


@files.get("/{file_id}/content")
async def file_content(file_id: str, resources: ResourcesDep, who: PrincipalDep) -> Response:
    """The file's bytes, exactly as uploaded (``client.files.content``)."""
    content = await resources.files.content(who.id, file_id)
    return Response(content, media_type="application/octet-stream")


@files.delete("/{file_id}")
async def delete_file(file_id: str, resources: ResourcesDep, who: PrincipalDep) -> Any:
    """Delete one of this caller's files; its bytes go back to the caller's quota."""
    return await resources.files.delete(who.id, file_id)
