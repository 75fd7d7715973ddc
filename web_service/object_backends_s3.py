"""The object store's S3 backend (boto3): for production, where several web hosts share objects.

Layout in the bucket: one S3 object per uploaded chunk, ``{prefix}{object id}/{start:016d}``
(the zero-padded start offset sorts the chunks in order), so uploads stay resumable with any
chunk size (S3's own multipart upload wants parts of 5 MiB but the last) and a retried chunk
simply replaces its key. Reads stream the chunks in order from the one holding the start of the
range, 1 MiB at a time; nothing holds a whole object, and a chunk is at most the service's
``object_chunk_bytes`` in memory while it is sent to S3.

    FNSERVE_OBJECT_BACKEND=s3 FNSERVE_S3_BUCKET=fnserve-objects FNSERVE_S3_ENDPOINT_URL=https://...

Credentials come the way boto3 finds them (environment, ~/.aws, instance role).
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import IO, Any

_COPY = 1024 * 1024


class S3Backend:
    def __init__(self, bucket: str, client: Any | None = None, prefix: str = "objects/",
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region or None)
        self.s3 = client
        self.bucket = bucket
        self.prefix = prefix

    def _key(self, object_id: str, start: int) -> str:
        return f"{self.prefix}{object_id}/{start:016d}"

    def _parts(self, object_id: str) -> list[tuple[int, int, str]]:
        """(start, size, key) of the object's chunks, in order."""
        out = []
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}{object_id}/")
        for page in pages:
            for item in page.get("Contents", []):
                out.append((int(item["Key"].rsplit("/", 1)[1]), int(item["Size"]), item["Key"]))
        return sorted(out)

    def write(self, object_id: str, offset: int, stream: IO[bytes], length: int, size: int | None = None) -> int:
        buf = io.BytesIO()
        done = 0
        while done < length:
            piece = stream.read(min(_COPY, length - done))
            if not piece:
                break
            buf.write(piece)
            done += len(piece)
        if done == length:  # a cut body stores nothing: the chunk is sent again
            buf.seek(0)
            self.s3.put_object(Bucket=self.bucket, Key=self._key(object_id, offset), Body=buf, ContentLength=done)
        return done

    def read(self, object_id: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        for part_start, size, key in self._parts(object_id):
            part_end = part_start + size
            if part_end <= start or (end is not None and part_start >= end):
                continue
            lo = max(start, part_start) - part_start
            hi = (min(end, part_end) if end is not None else part_end) - part_start
            body = self.s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={lo}-{hi - 1}")["Body"]
            try:
                while piece := body.read(_COPY):
                    yield piece
            finally:
                body.close()

    def sha256(self, object_id: str) -> str:
        digest = hashlib.sha256()
        for piece in self.read(object_id):
            digest.update(piece)
        return digest.hexdigest()

    def exists(self, object_id: str) -> bool:
        return bool(self._parts(object_id))

    def delete(self, object_id: str) -> None:
        keys = [{"Key": key} for _, _, key in self._parts(object_id)]
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i:i + 1000], "Quiet": True})
