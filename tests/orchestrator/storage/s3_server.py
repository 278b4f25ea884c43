"""A local S3-compatible server for tests: moto in server mode on 127.0.0.1 (``python s3_server.py PORT``).

moto names the root element of a CompleteMultipartUpload reply ``CompleteMultipartUploadResponse``;
AWS S3 sends ``CompleteMultipartUploadResult``, and pyarrow's S3 client rejects anything else, so every
upload above one part (5 MiB) would fail. The reply is renamed here, before the server starts.
"""

from __future__ import annotations

import sys


def _patch_multipart_reply() -> None:
    from moto.s3.responses import S3Response

    original = S3Response.serialized

    def serialized(self, result):  # type: ignore[no-untyped-def]
        status, headers, body = original(self, result)
        if self.data.get("Action") == "CompleteMultipartUpload":
            if isinstance(body, bytes):
                body = body.replace(b"CompleteMultipartUploadResponse", b"CompleteMultipartUploadResult")
            elif isinstance(body, str):
                body = body.replace("CompleteMultipartUploadResponse", "CompleteMultipartUploadResult")
        return status, headers, body

    S3Response.serialized = serialized  # type: ignore[method-assign]


def main(port: int) -> None:
    """Serve S3 on 127.0.0.1:``port`` until killed."""
    _patch_multipart_reply()
    from moto.server import main as moto_main

    moto_main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    main(int(sys.argv[1]))
