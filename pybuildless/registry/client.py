"""Registry operations on manifests and blobs (distribution-spec v1.1).

``RegistryClient`` wraps one ``Transport`` (one registry host) and speaks the
v2 API: manifest HEAD/GET/PUT, blob HEAD/GET, uploads (POST+PUT monolithic,
chunked PATCH fallback) and cross-repository mounts. Every byte that comes back
is verified against the digest it was asked for.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable
from urllib.parse import quote, urljoin

from pybuildless import transfer
from pybuildless.errors import DigestMismatchError, ImageFormatError, NotFoundError, RegistryError
from pybuildless.image import mediatypes as mt
from pybuildless.image.descriptor import Descriptor, Digest
from pybuildless.registry.options import RegistryOptions
from pybuildless.name import Reference
from pybuildless.registry.sharing import shared_transport
from pybuildless.registry.transport import Transport, redact_url, with_query
from pybuildless.registry.streams import IncompleteBodyError, NetworkStream, ResumingStream, read_exactly
from pybuildless.registry.verify import CHUNK, VerifyingReader

logger = logging.getLogger(__name__)

MAX_MANIFEST_SIZE = 4 * 1048 * 1048  # containerd's MaxManifestSize
ACCEPT_MANIFESTS = ", ".join(mt.MANIFEST_ACCEPT)


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest as the registry sent it, with its media type and digest."""

    raw: bytes
    media_type: str
    digest: Digest


def _content_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip()


def check_manifest(raw: bytes, content_type: str, what: str) -> str:
    """The media type of a manifest document; rejects ambiguous documents (CVE-2021-41190)."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ImageFormatError(f"{what}: manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ImageFormatError(f"{what}: manifest is not a JSON object")
    declared = doc.get("mediaType")
    if declared and content_type and content_type not in ("application/json", "application/octet-stream") \
            and declared != content_type:
        raise ImageFormatError(f"{what}: Content-Type {content_type} differs from mediaType {declared}")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        raise ImageFormatError(f"{what}: document is both an index and a manifest")
    media_type = declared or content_type
    if not media_type or media_type in ("application/json", "application/octet-stream"):
        media_type = mt.OCI_INDEX if "manifests" in doc else mt.OCI_MANIFEST
    if "prettyjws" in media_type or doc.get("schemaVersion") == 1:
        raise ImageFormatError(f"{what}: Docker schema 1 manifests are not supported")
    if media_type not in mt.MANIFEST_ACCEPT:
        raise ImageFormatError(f"{what}: unsupported manifest media type {media_type}")
    return media_type


class RegistryClient:
    def __init__(self, registry: str, options: RegistryOptions | None = None, *, pull: bool = False,
                 transport: Transport | None = None) -> None:
        self.options = options or RegistryOptions()
        self.transport = transport or shared_transport(registry, self.options, pull=pull)

    @classmethod
    def for_reference(cls, ref: Reference, options: RegistryOptions | None = None, *, pull: bool = False):
        return cls(ref.api_host, options, pull=pull)

    # -- manifests ------------------------------------------------------------------------

    def head_manifest(self, ref: Reference, *, scopes: tuple[str, ...] = ()) -> Descriptor | None:
        """Digest and size of a manifest without fetching it; None if the registry doesn't say."""
        try:
            resp = self.transport.request(
                "HEAD", f"/v2/{ref.repository}/manifests/{ref.identifier}", headers={"Accept": ACCEPT_MANIFESTS},
                scopes=scopes or (ref.scope("pull"),), what=f"resolve {ref}")
        except RegistryError as e:
            if e.status == 405:  # some registries lack HEAD
                return None
            raise
        with resp:
            digest = resp.headers.get("Docker-Content-Digest")
            size = resp.headers.get("Content-Length")
            media_type = _content_type(resp.headers.get("Content-Type"))
        if not digest or not size:
            return None
        return Descriptor(media_type, Digest.parse(digest), int(size))

    def get_manifest(self, ref: Reference, *, scopes: tuple[str, ...] = ()) -> FetchedManifest:
        """The manifest or index as raw bytes; by digest it is verified, by tag its digest is computed."""
        attempts = max(0, self.options.retries) + 1
        for n in range(attempts):
            try:
                return self._get_manifest_once(ref, scopes)
            except IncompleteBodyError as e:  # the transport already retried everything else
                if n == attempts - 1:
                    raise
                logger.warning("%s; retrying", e)
                self.transport._sleep(0.2 * (n + 1))
        raise AssertionError("unreachable")

    def _get_manifest_once(self, ref: Reference, scopes: tuple[str, ...]) -> FetchedManifest:
        what = f"manifest {ref}"
        resp = self.transport.request(
            "GET", f"/v2/{ref.repository}/manifests/{ref.identifier}", headers={"Accept": ACCEPT_MANIFESTS},
            scopes=scopes or (ref.scope("pull"),), stream=True, what=what)
        with resp:
            length = resp.headers.get("Content-Length")
            if length and int(length) > MAX_MANIFEST_SIZE:
                raise ImageFormatError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes")
            raw = NetworkStream(resp, what).read_all(MAX_MANIFEST_SIZE + 1)
            content_type = _content_type(resp.headers.get("Content-Type"))
        if length and len(raw) < int(length):
            raise IncompleteBodyError(f"{what}: body ended after {len(raw)} of {length} bytes", temporary=True)
        if len(raw) > MAX_MANIFEST_SIZE:
            raise ImageFormatError(f"{what}: manifest larger than {MAX_MANIFEST_SIZE} bytes")
        if ref.digest:  # verified before the bytes are even parsed
            want = Digest.parse(ref.digest)
            got = _digest_as(raw, want)
            if got != want:
                raise DigestMismatchError(f"{what}: content digest {got} does not match the requested digest")
            return FetchedManifest(raw, check_manifest(raw, content_type, what), want)
        media_type = check_manifest(raw, content_type, what)
        # By tag: compute the digest ourselves; Docker-Content-Digest is not trusted (kaniko#298).
        return FetchedManifest(raw, media_type, Digest.of_bytes(raw))

    def put_manifest(self, ref: Reference, raw: bytes, media_type: str, *, scopes: tuple[str, ...] = ()) -> Digest:
        """PUT the exact bytes with Content-Type = media type; the returned digest is checked."""
        digest = Digest.of_bytes(raw)
        target = ref.tag if ref.tag and not ref.digest else str(digest)
        resp = self.transport.request(
            "PUT", f"/v2/{ref.repository}/manifests/{target}", headers={"Content-Type": media_type},
            body=raw, ok=(200, 201, 202), scopes=scopes or (ref.scope("push,pull"),), what=f"push manifest {ref}")
        with resp:
            returned = resp.headers.get("Docker-Content-Digest")
        if returned and returned != str(digest):
            raise DigestMismatchError(f"push manifest {ref}: registry stored {returned}, expected {digest}")
        return digest

    # -- blobs ----------------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: Digest, *, scopes: tuple[str, ...]) -> bool:
        try:
            resp = self.transport.request("HEAD", f"/v2/{repository}/blobs/{digest}", scopes=scopes,
                                          what=f"check blob {digest}")
        except NotFoundError:
            return False
        resp.close()
        return True

    def open_blob(self, repository: str, desc: Descriptor, *, scopes: tuple[str, ...] = ()) -> VerifyingReader:
        """A stream of the blob that checks size and digest at EOF (and drains on close).

        A dropped connection is resumed transparently with ``Range`` (up to ``retries`` times).
        """
        what = f"blob {desc.digest} of {repository}"
        scopes = scopes or (f"repository:{repository}:pull",)
        stream = ResumingStream(lambda offset: self._blob_response(repository, desc, offset, scopes, what),
                                desc.size, what, retries=self.options.retries, sleep=self.transport._sleep)
        return VerifyingReader(stream, desc.digest, desc.size, what=what)

    def _blob_response(self, repository: str, desc: Descriptor, offset: int, scopes: tuple[str, ...], what: str):
        """GET the blob from ``offset``; (response, True if the registry honoured the range)."""
        headers = {"Range": f"bytes={offset}-"} if offset else None
        resp = self.transport.request("GET", f"/v2/{repository}/blobs/{desc.digest}", headers=headers,
                                      ok=(200, 206) if offset else (200,), scopes=scopes, stream=True, what=what)
        partial = resp.status_code == 206
        if partial and not (resp.headers.get("Content-Range") or "").startswith(f"bytes {offset}-"):
            resp.close()
            raise RegistryError(f"{what}: registry answered a different range than bytes {offset}-",
                                temporary=True)
        want = desc.size - offset if partial else desc.size
        length = resp.headers.get("Content-Length")
        if length is not None and desc.size >= 0 and int(length) != want:
            resp.close()
            raise DigestMismatchError(f"{what}: Content-Length {length} differs from the expected {want} bytes")
        return resp, partial

    def read_blob(self, repository: str, desc: Descriptor, *, limit: int, scopes: tuple[str, ...] = ()) -> bytes:
        """A small blob (a config) in memory, verified."""
        if desc.size > limit:
            raise ImageFormatError(f"blob {desc.digest} of {repository}: {desc.size} bytes is more than {limit}")
        with self.open_blob(repository, desc, scopes=scopes) as reader:
            return reader.read()

    def download_blob(self, repository: str, desc: Descriptor, dest: Path, *, scopes: tuple[str, ...] = (),
                      progress: transfer.Transfer = transfer.NULL_TRANSFER) -> Path:
        """Stream a blob to ``dest`` via a private temp file and a rename, verified;
        the bytes are reported to ``progress`` (the live display on a terminal)."""
        # a private temp name: other threads or processes may fetch the same blob at once
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out, \
                    self.open_blob(repository, desc, scopes=scopes).report_to(progress) as reader:
                while chunk := reader.read(CHUNK):
                    out.write(chunk)
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
            return dest
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def mount_blob(self, repository: str, digest: Digest, source_repository: str, *,
                   scopes: tuple[str, ...]) -> str | None:
        """Try a cross-repository mount. None if mounted; else the upload URL it opened (202)."""
        url = f"/v2/{repository}/blobs/uploads/?mount={quote(str(digest))}&from={quote(source_repository)}"
        try:
            resp = self.transport.request("POST", url, ok=(201, 202), scopes=scopes, body=b"",
                                          what=f"mount {digest} from {source_repository}")
        except RegistryError as e:
            if not e.status:
                raise
            if e.status in (401, 403):
                # No token reading the source and writing here: a token server that grants one
                # scope per token (only the first of a request), or no pull on the source. The
                # destination's own scope (push_scopes puts it first) does for an upload.
                logger.debug("mount of %s from %s refused (%s); uploading", digest, source_repository, e)
                return self.start_upload(repository, scopes=scopes[:1])
            # A failed mount is not fatal: upload instead (ggcr #1404, #1679).
            logger.debug("mount of %s from %s failed (%s); uploading", digest, source_repository, e)
            return self.start_upload(repository, scopes=scopes)
        with resp:
            if resp.status_code == 201:
                return None
            return self._location(resp)

    def start_upload(self, repository: str, *, scopes: tuple[str, ...]) -> str:
        return self._start_upload(repository, scopes)[0]

    def _start_upload(self, repository: str, scopes: tuple[str, ...]) -> tuple[str, int]:
        """(upload URL, minimum PATCH size the registry asks for via OCI-Chunk-Min-Length)."""
        resp = self.transport.request("POST", f"/v2/{repository}/blobs/uploads/", ok=(202,), scopes=scopes,
                                      body=b"", headers={"Content-Length": "0"}, what="start upload")
        with resp:
            try:
                min_chunk = int(resp.headers.get("OCI-Chunk-Min-Length") or 0)
            except ValueError:
                min_chunk = 0
            return self._location(resp), min_chunk

    def _location(self, resp) -> str:
        location = resp.headers.get("Location")
        if not location:
            raise RegistryError(f"{resp.request.method} {redact_url(resp.url)}: upload response without Location")
        url = urljoin(resp.url, location)  # may be relative; always use the latest one
        self.transport.check_foreign_host(url, "upload location")
        return url

    def upload_blob(self, repository: str, desc: Descriptor, opener: Callable[[], BinaryIO], *,
                    scopes: tuple[str, ...], location: str | None = None) -> None:
        """Monolithic POST+PUT streaming from ``opener()``; chunked PATCH if the PUT is refused.

        Retried as a whole from a fresh POST: a PATCH is never replayed into unknown state.
        """
        attempts = max(0, self.options.retries) + 1
        for n in range(attempts):
            loc = location or self.start_upload(repository, scopes=scopes)
            location = None
            try:
                self._put_monolithic(loc, desc, opener, scopes)
                return
            except RegistryError as e:
                self._cancel(loc, scopes)
                if e.status in (400, 405, 411, 413, 416) and "DIGEST_INVALID" not in e.codes:
                    logger.info("monolithic upload of %s refused (HTTP %s); uploading in chunks", desc.digest,
                                e.status)
                    loc, min_chunk = self._start_upload(repository, scopes)
                    self._upload_chunked(loc, desc, opener, scopes, max(self.options.upload_chunk_size, min_chunk))
                    return
                if not e.temporary or n == attempts - 1:
                    raise
                logger.warning("upload of %s failed (%s); restarting", desc.digest, e)
                self.transport._sleep(0.2 * 3**n)

    def upload_small(self, repository: str, desc: Descriptor, opener: Callable[[], BinaryIO], *,
                     scopes: tuple[str, ...], location: str | None = None) -> None:
        """A small blob (a config, a small layer) in the fewest requests the registry takes.

        With ``location`` (an upload already opened, e.g. by the push-permission check): one
        PUT, or a fresh upload when that session is gone. Otherwise a single POST with
        ``?digest=`` and the bytes (distribution-spec "Single POST", end-4b: 201 and done);
        a registry without it answers 202 with a session (distribution 2.8 does, having read
        nothing), and the bytes go again by PUT there ("POST then PUT"). Which kind the
        registry is gets remembered, so the bytes are sent once per blob after the first.
        """
        if location is not None:
            try:
                self.upload_blob(repository, desc, opener, scopes=scopes, location=location)
                return
            except NotFoundError as e:  # purged while the build ran: start a new upload
                logger.debug("upload session for %s gone (%s); starting a new one", desc.digest, e)
        transport = self.transport
        if transport.single_post_uploads is False:
            self.upload_blob(repository, desc, opener, scopes=scopes)
            return
        resp = transport.request(
            "POST", f"/v2/{repository}/blobs/uploads/?digest={quote(str(desc.digest))}", body=opener,
            ok=(201, 202), scopes=scopes, what=f"upload {desc.digest}",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)})
        with resp:
            transport.single_post_uploads = resp.status_code == 201
            if resp.status_code == 201:
                return
            location = self._location(resp)
        self.upload_blob(repository, desc, opener, scopes=scopes, location=location)

    def _put_monolithic(self, location: str, desc: Descriptor, opener, scopes) -> None:
        resp = self.transport.request(
            "PUT", with_query(location, digest=str(desc.digest)), body=opener, ok=(201, 204), scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
            what=f"upload {desc.digest}", retry=False)
        resp.close()

    def _upload_chunked(self, location: str, desc: Descriptor, opener, scopes, chunk_size: int) -> None:
        # Content-Range is "<start>-<end>", inclusive, no "bytes " prefix or total (distribution-spec).
        offset = 0
        with opener() as f:
            while offset < desc.size:
                chunk = read_exactly(f, chunk_size)
                if not chunk:
                    raise RegistryError(f"upload {desc.digest}: source ended at {offset} of {desc.size} bytes")
                end = offset + len(chunk) - 1
                resp = self.transport.request(
                    "PATCH", location, body=chunk, ok=(202,), scopes=scopes, retry=False,
                    headers={"Content-Type": "application/octet-stream", "Content-Range": f"{offset}-{end}",
                             "Content-Length": str(len(chunk))}, what=f"upload {desc.digest} chunk")
                with resp:
                    location = self._location(resp)
                offset = end + 1
        resp = self.transport.request("PUT", with_query(location, digest=str(desc.digest)), body=b"",
                                      ok=(201, 204), scopes=scopes, retry=False, what=f"finish upload {desc.digest}")
        resp.close()

    def _cancel(self, location: str, scopes) -> None:
        try:
            self.transport.request("DELETE", location, ok=(200, 202, 204, 404), scopes=scopes, retry=False).close()
        except Exception:  # best effort
            pass


def _digest_as(raw: bytes, like: Digest) -> Digest:
    """The digest of ``raw`` in the algorithm of ``like``."""
    h = like.hasher()
    h.update(raw)
    return Digest(like.algorithm, h.hexdigest())
