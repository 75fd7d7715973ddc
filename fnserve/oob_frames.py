"""Large values without copies: pickle protocol 5 with out-of-band buffers, framed in one buffer.

A ``dill-data`` body is normally one pickle stream, and pickling a 1 GiB numpy array copies its
bytes into the stream (and loading copies them out again). With protocol 5, objects that hold
contiguous memory (numpy arrays, ``bytearray``, ``PickleBuffer``) hand their buffers out of
band instead; this module frames the stream and those buffers so that they still travel as one
fnserve buffer (body of a ``dill-data`` buffer, after its header line)::

    MARKER  count:u32  pickle_len:u64  len_0:u64 ... len_{count-1}:u64
    pickle stream, zero-padded to a multiple of 64
    buffer 0, zero-padded to a multiple of 64
    ...

A classic pickle stream starts with the PROTO opcode (0x80), never with the marker's NUL, so
both kinds of body are told apart from their first byte. Buffers start 64-byte aligned (numpy's
preferred alignment). Dumping returns the frame as a list of parts (the large ones are views of
the caller's objects: nothing is copied); loading takes views of the received buffer, so a
downloaded array is backed by the download's own memory.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from typing import Any, Callable

MARKER = b"\x00fnsoob1"
_ALIGN = 64
_PAD = bytes(_ALIGN)
# Below this many bytes a buffer stays in band: a frame pays off for large buffers only.
MIN_OOB_BYTES = 64 * 1024

Part = bytes | memoryview


def _pad(n: int) -> int:
    return -n % _ALIGN


def dump_parts(value: Any, dumps: Callable[..., bytes]) -> list[Part] | None:
    """``value`` as frame parts, or ``None`` when it holds no large contiguous buffer (the
    caller then uses a classic stream). ``dumps`` is ``pickle.dumps`` or ``dill.dumps``."""
    buffers: list[memoryview] = []

    def keep_out(pb: pickle.PickleBuffer) -> bool:
        raw = pb.raw()
        if raw.nbytes < MIN_OOB_BYTES:
            return True  # in band
        buffers.append(raw)
        return False

    stream = dumps(value, protocol=5, buffer_callback=keep_out)
    if not buffers:
        return None
    head = MARKER + struct.pack(f"<IQ{len(buffers)}Q", len(buffers), len(stream), *(b.nbytes for b in buffers))
    parts: list[Part] = [head, stream, _PAD[: _pad(len(stream))]]
    for b in buffers:
        parts += [b, _PAD[: _pad(b.nbytes)]]
    return [p for p in parts if len(p)]


_PICKLER: Any = None


def dill_dumps(value: Any, protocol: int, buffer_callback: Callable[[pickle.PickleBuffer], bool]) -> bytes:
    """``dill.dumps`` that lets plain numpy arrays out of band (dill's own numpy hook pickles
    them with ``__reduce__``, in band, whatever the protocol)."""
    global _PICKLER
    if _PICKLER is None:
        import io

        import dill

        try:
            import numpy
        except ImportError:
            ndarray: Any = None
        else:
            ndarray = numpy.ndarray

        class OobPickler(dill.Pickler):
            def save(self, obj: Any, save_persistent_id: bool = True) -> None:
                if ndarray is not None and type(obj) is ndarray and not obj.dtype.hasobject:
                    memo = self.memo.get(id(obj))
                    if memo is not None:
                        self.write(self.get(memo[0]))
                        return
                    self.save_reduce(*obj.__reduce_ex__(self.proto), obj=obj)
                    return
                super().save(obj, save_persistent_id)

        def dumps(value: Any, protocol: int, buffer_callback: Any) -> bytes:
            f = io.BytesIO()
            OobPickler(f, protocol=protocol, buffer_callback=buffer_callback).dump(value)
            return f.getvalue()

        _PICKLER = dumps
    return _PICKLER(value, protocol, buffer_callback)  # type: ignore[no-any-return]


def is_frame(body: memoryview) -> bool:
    return body[: len(MARKER)] == MARKER


def load(body: memoryview, loads: Callable[..., Any]) -> Any:
    """The value of a frame (``body`` starts with :data:`MARKER`). Buffers are views of
    ``body`` when it is writable; a read-only body (bytes) gets copies, so that loaded arrays
    are writable as they were when dumped."""
    count, stream_len = struct.unpack_from("<IQ", body, len(MARKER))
    at = len(MARKER) + 12
    lengths = struct.unpack_from(f"<{count}Q", body, at)
    at += 8 * count
    stream = body[at : at + stream_len]
    at += stream_len + _pad(stream_len)
    buffers: list[Any] = []
    for n in lengths:
        if at + n > len(body):
            raise ValueError("frame is shorter than its table says")
        view = body[at : at + n]
        buffers.append(view if not body.readonly else bytearray(view))
        at += n + _pad(n)
    return loads(stream, buffers=buffers)


def total(parts: Sequence[Part]) -> int:
    return sum(memoryview(p).nbytes for p in parts)


def join(parts: Sequence[Part]) -> bytes:
    return b"".join(parts)
