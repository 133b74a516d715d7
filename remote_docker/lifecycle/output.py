"""Reading a result file out of a container and decoding it, on the worker only.

Unpickling runs arbitrary code, so it happens here and nowhere else: never in the
triggerer, which holds other tasks' work and credentials.
"""

from __future__ import annotations

import json
import pickle
import tarfile
import tempfile
from collections.abc import AsyncIterable
from typing import Any, Literal

OutputFormat = Literal["pickle", "json"]
OUTPUT_FORMATS = ("pickle", "json")
DEFAULT_MAX_OUTPUT_BYTES = 64 * 1024 * 1024
_SPOOL_IN_MEMORY = 8 * 1024 * 1024  # larger archives spill to a temporary file


class OutputError(Exception):
    """The output file can't be used; the message names the path and the fix."""


def check_size(path: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise OutputError(
            f"retrieve_output_path {path} is {size:,} bytes, over max_output_bytes={max_bytes:,}; "
            "raise max_output_bytes or write a smaller result"
        )


async def read_single_file(chunks: AsyncIterable[bytes], path: str, max_bytes: int) -> bytes:
    """The one regular file inside a ``GET /containers/{id}/archive`` tar stream."""
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
        received = 0
        async for chunk in chunks:
            received += len(chunk)
            # tar adds headers and padding; allow for them before refusing
            if received > max_bytes + 1024 * 1024:
                check_size(path, received, max_bytes)
            spool.write(chunk)
        spool.seek(0)
        try:
            with tarfile.open(fileobj=spool, mode="r|") as tar:
                for member in tar:
                    if member.isdir():
                        raise OutputError(f"retrieve_output_path {path} is a folder; point it at a file")
                    if not member.isfile():
                        continue
                    check_size(path, member.size, max_bytes)
                    handle = tar.extractfile(member)
                    return handle.read() if handle else b""
        except tarfile.TarError as err:
            raise OutputError(f"retrieve_output_path {path}: the daemon sent an unreadable archive ({err})") from None
    raise OutputError(f"retrieve_output_path {path} is not a regular file")


def decode(data: bytes, output_format: OutputFormat, path: str) -> Any:
    """Decode the file's bytes. Call only on the worker."""
    if output_format == "json":
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise OutputError(f"retrieve_output_path {path} is not valid JSON ({err}); write it with json.dump") from None
    try:
        return pickle.loads(data)
    except Exception as err:  # unpickling can raise almost anything
        raise OutputError(
            f"retrieve_output_path {path} is not a valid pickle ({type(err).__name__}: {str(err)[:200]}); "
            "write it with pickle.dump, or set output_format='json'"
        ) from None
