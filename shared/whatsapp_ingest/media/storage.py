"""Supabase Storage through its S3-compatible endpoint (boto3), written as a stream:
parts of PART_BYTES are uploaded as they fill (multipart), so a file is never
held whole in memory; a file smaller than one part is one PUT. One part uploads
on a thread of its own while the next is downloaded and decrypted (boto3 lets go
of the GIL while it waits on the network): at most two parts are held at once."""

from __future__ import annotations

import hashlib
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any

from whatsapp_ingest.config import ConfigError, StorageSecrets, storage_secrets

#: S3's smallest part is 5 MiB; 8 MiB keeps a 100 MiB file to 13 parts.
PART_BYTES = 8 * 1024 * 1024


def s3_client() -> Any:
    """The S3 client of this container, rebuilt when the storage secret changes (a rotation)."""
    return _client(storage_secrets())


@cache
def _client(secrets: StorageSecrets) -> Any:
    import boto3
    from botocore.config import Config

    if not (secrets.access_key_id and secrets.secret_access_key):
        raise ConfigError("the storage secret needs s3_access_key_id and s3_secret_access_key")
    return boto3.client(
        "s3",
        endpoint_url=secrets.endpoint_url,
        region_name=secrets.region,
        aws_access_key_id=secrets.access_key_id,
        aws_secret_access_key=secrets.secret_access_key,
        # Supabase's endpoint takes path-style addressing only.
        config=Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",  # what Supabase verifies (presigned URLs too)
            connect_timeout=5,
            read_timeout=60,
            retries={"mode": "standard", "total_max_attempts": 3},
        ),
    )


class StreamingUpload:
    """Write plaintext in any chunk sizes; `complete` stores the object, `abort` leaves nothing."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str, disposition: str | None) -> None:
        self._client, self._bucket, self._key = client, bucket, key
        self._extra: dict[str, str] = {"ContentType": content_type}
        if disposition:
            self._extra["ContentDisposition"] = disposition
        self._buffer: list[bytes] = []  # joined once per part: one copy of each byte
        self._buffered = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._sender: ThreadPoolExecutor | None = None
        self._sending: Future[None] | None = None
        self.size = 0
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        self.sha256.update(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= PART_BYTES:  # parts may exceed PART_BYTES by one chunk: S3 takes any size above 5 MiB
            self._send_part(self._take())

    def _take(self) -> bytes:
        part = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        return part

    def _send_part(self, body: bytes) -> None:
        """Upload `body` as the next part in the background, once the previous part is sent."""
        if self._upload_id is None:
            created = self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key, **self._extra)
            self._upload_id = created["UploadId"]
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="media-part")
        self._wait()
        assert self._sender is not None
        self._sending = self._sender.submit(self._upload_part, len(self._parts) + 1, body)

    def _upload_part(self, number: int, body: bytes) -> None:
        sent = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": sent["ETag"]})

    def _wait(self) -> None:
        """The part being sent is sent (its error raised here)."""
        if self._sending is not None:
            sending, self._sending = self._sending, None
            sending.result()

    def complete(self) -> None:
        if self._upload_id is None:
            self._client.put_object(Bucket=self._bucket, Key=self._key, Body=self._take(), **self._extra)
        else:
            if self._buffered:
                self._send_part(self._take())
            self._wait()
            self._stop()
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )

    def _stop(self) -> None:
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def abort(self) -> None:
        self._buffer, self._buffered = [], 0
        if self._sending is not None:
            self._sending.exception()  # let a part in flight finish (or fail) before the upload is aborted
            self._sending = None
        self._stop()
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None
