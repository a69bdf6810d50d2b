"""Streamed multipart uploads: each file part goes straight into the job folder under a name the server
chooses (`volume.nii.gz`, `reference.nrrd`, …); the client's file name only picks the reader (its
suffix, from a fixed list) and is shown back in messages. Over the size limit, everything is removed."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, BinaryIO

from python_multipart.multipart import MultipartParser, parse_options_header

from mrisr.errors import InputError
from mrisr.server.config import SINGLE_FILE_SUFFIXES

FILE_PARTS = ("volume", "reference", "reference_seg")
OPTIONS_PART = "options"
MAX_OPTIONS_BYTES = 64 * 1024


class UploadTooLarge(Exception):
    """The request body is larger than the server accepts."""


def upload_suffix(filename: str, part: str) -> str:
    """The reader suffix of a client file name, from SINGLE_FILE_SUFFIXES only."""
    lower = filename.lower()
    for suffix in sorted(SINGLE_FILE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return suffix
    raise InputError(f"{part} file {display_name(filename)!r} has an unsupported extension: upload one of "
                     f"{', '.join(SINGLE_FILE_SUFFIXES)} (the client converts DICOM folders, .mhd and .nhdr)")


def display_name(filename: str) -> str:
    """The client's file name reduced to a printable base name, for messages only (never a path)."""
    base = re.split(r"[\\/]", filename)[-1]
    return re.sub(r"[^\w.\- ]", "_", base)[:100] or "upload"


@dataclass
class ReceivedForm:
    """What one POST /v1/jobs carried: file parts saved in the job folder, and the options JSON."""

    files: dict[str, str] = field(default_factory=dict)  # part name → server file name in the job folder
    display: dict[str, str] = field(default_factory=dict)  # server file name → client's file name
    options: dict[str, Any] = field(default_factory=dict)


class _FormWriter:
    """python-multipart callbacks that write file parts into `folder` and keep the options text."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.form = ReceivedForm()
        self.header_field = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.part: str | None = None
        self.sink: BinaryIO | None = None
        self.text = bytearray()
        self.error: InputError | None = None

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._append("header_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._append("header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _append(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _part_begin(self) -> None:
        self.headers, self.part, self.text = {}, None, bytearray()

    def _header_end(self) -> None:
        self.headers[self.header_field.lower()] = self.header_value
        self.header_field, self.header_value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name in self.form.files or (name == OPTIONS_PART and self.form.options):
            raise InputError(f"the upload has two {name!r} parts: send each part once")
        if name in FILE_PARTS:
            filename = params.get(b"filename", b"").decode("utf-8", "replace")
            stored = f"{name}{upload_suffix(filename, name)}"
            self.form.files[name] = stored
            self.form.display[stored] = display_name(filename)
            self.sink = open(self.folder / stored, "xb")
        elif name != OPTIONS_PART:
            raise InputError(f"unknown upload part {name!r}: send volume, reference, reference_seg and options")
        self.part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.sink is not None:
            self.sink.write(data[start:end])
        else:
            self.text += data[start:end]
            if len(self.text) > MAX_OPTIONS_BYTES:
                raise InputError(f"the options part is over {MAX_OPTIONS_BYTES // 1024} kB: send only the options")

    def _part_end(self) -> None:
        if self.sink is not None:
            self.sink.close()
            self.sink = None
        elif self.part == OPTIONS_PART:
            try:
                options = json.loads(self.text.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise InputError(f"the options part is not JSON ({exc}): send the enhance options as a JSON object")
            if not isinstance(options, dict):
                raise InputError("the options part is not a JSON object: send e.g. {\"method\": \"bspline\"}")
            self.form.options = options

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


async def receive_form(content_type: str, stream: AsyncIterator[bytes], folder: Path,
                       max_bytes: int) -> ReceivedForm:
    """Parse a multipart body from `stream` into `folder`; UploadTooLarge past `max_bytes` (the caller
    removes the folder), InputError for a malformed form."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or b"boundary" not in params:
        raise InputError("the job must be uploaded as multipart/form-data: use mrisr's client or curl -F")
    writer = _FormWriter(folder)
    parser = MultipartParser(params[b"boundary"], writer.callbacks())
    received = 0
    try:
        async for chunk in stream:
            received += len(chunk)
            if received > max_bytes:
                raise UploadTooLarge(received)
            parser.write(chunk)
        parser.finalize()
    except InputError:
        raise
    except (ValueError, OSError) as exc:  # python-multipart's parse errors are ValueErrors
        raise InputError(f"the upload is not a valid multipart form ({str(exc)[:120]}): send it again") from None
    finally:
        writer.close()
    if "volume" not in writer.form.files:
        raise InputError("the upload has no 'volume' part: send the volume to enhance as the 'volume' file")
    return writer.form
