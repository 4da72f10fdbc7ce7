"""Websocket tunnel: after the backend accepted an upgrade, relay its frames byte for byte.

Owns: the two pumps (client to backend, backend to client) with
backpressure, the frame scanner that follows frame boundaries as bytes pass
(to enforce the message size limit, count messages and see close codes), the
close that ends a tunnel, and the session's activity and events through
:class:`~jupyter_lims_bridge.proxy.ProxySettings`.

Why byte for byte: a client's frames are masked, as the backend (to whom the
proxy is the client) requires, and the backend's frames are unmasked, as the
client requires; so no frame needs rewriting, and pings, pongs, close frames,
the subprotocol and any extension (permessage-deflate) are whatever the two
ends agreed on. Parsing, unmasking, decoding and re-masking every message on
both sides (tornado's ``WebSocketHandler`` plus its client) cost a third of
direct throughput in ``bench/proxy.py``; reading a 2-14 byte header per frame
costs next to nothing. Payloads are never inspected nor held: memory stays at
one read buffer per direction whatever the message size.

Must not: forward a frame over the size limit (the tunnel closes with 1009
instead), write a control frame into the middle of another frame, or leave a
socket open after either end has gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

from tornado.iostream import IOStream, StreamClosedError

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
#: pending bytes toward a slow reader before the pump stops reading the other end
HIGH_WATER = 1024 * 1024
#: how long a closing tunnel waits for the ends to answer the close and hang up
CLOSE_GRACE = 5.0

CLOSE_TOO_BIG = 1009


class FrameScanner:
    """Frame boundaries of one direction of a websocket byte stream.

    :meth:`feed` takes each chunk as read and answers which bytes may be
    forwarded: a frame header cut by the chunk's end is held back until it is
    complete, so a violation is always seen before any byte of its frame went
    out, and a close frame injected on this direction lands between frames.
    """

    __slots__ = ("limit", "messages", "close_code", "_skip", "_held", "_message")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: complete data messages seen (a fragmented message counts once)
        self.messages = 0
        #: the code of the first close frame seen, if any
        self.close_code: int | None = None
        self._skip = 0  # payload bytes of the current frame still to pass
        self._held = b""  # the start of a frame header cut by a chunk's end
        self._message = 0  # payload bytes of the current (fragmented) message so far

    def at_boundary(self) -> bool:
        """Whether every byte forwarded so far ends a complete frame."""
        return self._skip == 0

    def feed(self, data: bytes) -> tuple[bytes | memoryview, bool]:
        """``(bytes to forward, over_limit)``; when over the limit, the bytes
        are the complete frames before the offending one."""
        if self._held:
            data = self._held + data
            self._held = b""
        size = len(data)
        pos = self._skip
        if pos >= size:
            self._skip = pos - size
            return data, False
        while pos < size:
            if size - pos < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            masked = second & 0x80
            if masked:
                header += 4
            if size - pos < header:
                break
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = first & 0x0F
            if opcode & 0x8:
                if opcode == 0x8 and self.close_code is None and length >= 2:
                    self._see_close(data, pos + header, masked, size)
            else:
                total = length if opcode else self._message + length
                if total > self.limit:
                    self._skip = 0
                    return memoryview(data)[:pos], True
                if first & 0x80:
                    self.messages += 1
                    self._message = 0
                else:
                    self._message = total
            pos += header + length
        if pos >= size:
            self._skip = pos - size
            return data, False
        self._skip = 0
        self._held = bytes(data[pos:])
        return memoryview(data)[:pos], False

    def _see_close(self, data: bytes, start: int, masked: int, size: int) -> None:
        if start + 2 > size:
            return  # the code is in the next chunk; the event goes without it
        code = data[start : start + 2]
        if masked:
            mask = data[start - 4 : start - 2]
            code = bytes((code[0] ^ mask[0], code[1] ^ mask[1]))
        self.close_code = int.from_bytes(code, "big")


def close_frame(code: int, *, masked: bool) -> bytes:
    """A close frame with ``code``; masked when it goes to the backend (we are its client)."""
    payload = code.to_bytes(2, "big")
    if not masked:
        return b"\x88\x02" + payload
    mask = os.urandom(4)
    return b"\x88\x82" + mask + bytes((payload[0] ^ mask[0], payload[1] ^ mask[1]))


class Tunnel:
    """One relayed websocket: ``client`` and ``backend`` are connected
    streams, the backend's 101 read; :meth:`run` sends ``answer`` (the 101 for
    the client), relays, and returns once both ends are closed."""

    def __init__(
        self,
        client: IOStream,
        backend: IOStream,
        answer: bytes,
        *,
        max_message_size: int,
        on_activity: Callable[[], None],
    ) -> None:
        self.client = client
        self.backend = backend
        self.answer = answer
        self.upward = FrameScanner(max_message_size)  # client -> backend
        self.downward = FrameScanner(max_message_size)  # backend -> client
        self.on_activity = on_activity
        self.closing = False
        self._close_timer: asyncio.TimerHandle | None = None

    @property
    def messages(self) -> int:
        return self.upward.messages + self.downward.messages

    @property
    def close_code(self) -> int | None:
        """The code of the close the session ended with (the first one seen)."""
        return self.upward.close_code or self.downward.close_code

    async def run(self) -> None:
        for stream in (self.client, self.backend):
            # a relayed frame must not wait for the next one (Nagle)
            stream.set_nodelay(True)
        try:
            self.client.write(self.answer)
            await asyncio.gather(
                self._pump(self.client, self.backend, self.upward, self.downward,
                           backend_is_dst=True),
                self._pump(self.backend, self.client, self.downward, self.upward,
                           backend_is_dst=False),
            )
        except StreamClosedError:
            pass  # the client left before its answer went out
        finally:
            if self._close_timer is not None:
                self._close_timer.cancel()
            self.client.close()
            self.backend.close()

    async def _pump(
        self,
        src: IOStream,
        dst: IOStream,
        scanner: FrameScanner,
        reverse: FrameScanner,
        *,
        backend_is_dst: bool,
    ) -> None:
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                data = await src.read_bytes(READ_SIZE, partial=True)
                if self.closing:
                    continue  # the close answer and anything after it: not relayed
                out, too_big = scanner.feed(data)
                if out:
                    pending = dst.write(out)
                if too_big:
                    self._refuse_message(src, dst, reverse, backend_is_dst=backend_is_dst)
                    continue
                self.on_activity()
                if dst.writing() and _backlog(dst) > HIGH_WATER:
                    await pending  # the reader is behind: stop reading its source
        except StreamClosedError:
            pass
        # src hung up (or dst failed): deliver what is on its way, then hang up dst
        if pending is not None and not dst.closed():
            try:
                await asyncio.wait_for(asyncio.shield(pending), CLOSE_GRACE)
            except (StreamClosedError, asyncio.TimeoutError):
                pass
        dst.close()

    def _refuse_message(
        self, src: IOStream, dst: IOStream, reverse: FrameScanner, *, backend_is_dst: bool
    ) -> None:
        """A message over the limit: close both ends with 1009, forward nothing more."""
        self.closing = True
        log.info("lims-bridge: proxy: websocket message over the size limit; closing with 1009")
        try:
            dst.write(close_frame(CLOSE_TOO_BIG, masked=backend_is_dst))
        except StreamClosedError:
            pass
        if reverse.at_boundary():  # else src is mid-frame: a plain hang-up must do
            try:
                src.write(close_frame(CLOSE_TOO_BIG, masked=not backend_is_dst))
            except StreamClosedError:
                pass
        if self.upward.close_code is None:
            self.upward.close_code = CLOSE_TOO_BIG
        # both ends answer the close and hang up; don't wait on them forever
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        self.client.close()
        self.backend.close()


def _backlog(stream: IOStream) -> int:
    # tornado keeps no public size of the pending write buffer
    return getattr(stream, "_write_buffer_size", HIGH_WATER + 1)


__all__ = ["FrameScanner", "Tunnel", "close_frame"]
