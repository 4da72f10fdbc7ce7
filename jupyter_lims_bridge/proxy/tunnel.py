"""Websocket tunnel: after the backend accepted an upgrade, relay its frames byte for byte.

Owns: the two pumps (client to backend, backend to client) with
backpressure, the frame scanner that follows frame boundaries as bytes pass
(to enforce the message size limit and the control-frame rules, count
messages and see close codes), the bytes relayed each way, and the close
that ends a tunnel (1009 too big, 1002 protocol error, 1008 when its client is
no longer admitted: ``close_policy``, called by ``ProxyService.sweep``). The
session's registration and events are :mod:`.service`'s.

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
instead), forward a frame that breaks the protocol's framing rules the scanner
relies on (a control frame over 125 bytes or fragmented, a reserved opcode:
closed with 1002), write a control frame into the middle of another frame, or
leave a socket open after either end has gone.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from tornado.iostream import IOStream, StreamClosedError

from .upstream import detach_socket, detachable, write_backlog

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
#: pending bytes toward a slow reader before the pump stops reading the other end
HIGH_WATER = 1024 * 1024
#: how long a closing tunnel waits for the ends to answer the close and hang up
CLOSE_GRACE = 5.0

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
#: RFC 6455 5.5: control frames carry at most 125 bytes and are never fragmented
MAX_CONTROL_PAYLOAD = 125
_DATA_OPCODES = frozenset({0x0, 0x1, 0x2})
_CONTROL_OPCODES = frozenset({0x8, 0x9, 0xA})


class FrameScanner:
    """Frame boundaries of one direction of a websocket byte stream.

    :meth:`feed` takes each chunk as read and answers which bytes may be
    forwarded: a frame header cut by the chunk's end is held back until it is
    complete, so a violation is always seen before any byte of its frame went
    out, and a close frame injected on this direction lands between frames.

    Violations: a data message over ``limit`` (1009); a control frame
    (opcode >= 0x8) longer than 125 bytes or without FIN, or a reserved opcode
    (0x3-0x7, 0xB-0xF) (1002). Control frames are not counted against the
    size limit, so without the second rule a "ping" declaring 2^40 bytes
    would carry any amount of data past it.
    """

    __slots__ = ("_held", "_message", "_skip", "close_code", "limit", "messages")

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

    def feed(self, data: bytes) -> tuple[bytes | memoryview, int]:
        """``(bytes to forward, violation)``: ``violation`` is 0, or the close
        code to end the session with (1009 too big, 1002 protocol error); then
        the bytes are the complete frames before the offending one."""
        if self._held:
            data = self._held + data
            self._held = b""
        size = len(data)
        pos = self._skip
        if pos >= size:
            self._skip = pos - size
            return data, 0
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
            if opcode in _CONTROL_OPCODES:
                if length > MAX_CONTROL_PAYLOAD or not first & 0x80:
                    self._skip = 0
                    return memoryview(data)[:pos], CLOSE_PROTOCOL_ERROR
                if opcode == 0x8 and self.close_code is None and length >= 2:
                    self._see_close(data, pos + header, masked, size)
            elif opcode in _DATA_OPCODES:
                total = length if opcode else self._message + length
                if total > self.limit:
                    self._skip = 0
                    return memoryview(data)[:pos], CLOSE_TOO_BIG
                if first & 0x80:
                    self.messages += 1
                    self._message = 0
                else:
                    self._message = total
            else:  # reserved opcode: no frame length can be trusted after it
                self._skip = 0
                return memoryview(data)[:pos], CLOSE_PROTOCOL_ERROR
            pos += header + length
        if pos >= size:
            self._skip = pos - size
            return data, 0
        self._skip = 0
        self._held = bytes(data[pos:])
        return memoryview(data)[:pos], 0

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
    the client), relays, and returns once both ends are closed.

    The relay runs on asyncio transports (:class:`_Side`): tornado hands over
    both sockets with whatever it had buffered, and each read is scanned and
    written to the other socket in the same callback, with no future nor
    coroutine step per chunk (a widget round trip is four such relays: the
    per-chunk hops of ``IOStream`` pumps cost half its speed in
    ``bench/proxy.py``). Where tornado cannot hand them over (a version whose
    internals were not tested: ``upstream.detachable``), two coroutine pumps
    relay over the ``IOStream`` s instead, with the same scanning and closing.
    """

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
        #: bytes forwarded client -> backend and backend -> client
        self.bytes_up = 0
        self.bytes_down = 0
        self._close_timer: asyncio.TimerHandle | None = None
        # the ends as the relay sees them: _Side (transports) or _StreamEnd (pumps)
        self._client_end: _End | None = None
        self._backend_end: _End | None = None

    @property
    def messages(self) -> int:
        return self.upward.messages + self.downward.messages

    @property
    def close_code(self) -> int | None:
        """The code of the close the session ended with (the first one seen)."""
        return self.upward.close_code or self.downward.close_code

    async def run(self) -> None:
        if detachable(self.client) and detachable(self.backend):
            await self._run_on_transports()
        else:
            await self._run_on_streams()

    # -- the relay on asyncio transports ------------------------------------------

    async def _run_on_transports(self) -> None:
        loop = asyncio.get_running_loop()
        client_sock, from_client = detach_socket(self.client)
        backend_sock, from_backend = detach_socket(self.backend)
        client = _Side(self, self.upward, up=True)
        backend = _Side(self, self.downward, up=False)
        client.peer, backend.peer = backend, client
        try:
            for sock in (client_sock, backend_sock):
                # a relayed frame must not wait for the next one (Nagle)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # both start paused (_Side.connection_made) so that nothing is relayed
            # before the 101 and the bytes tornado had already read
            await loop.connect_accepted_socket(lambda: client, sock=client_sock)
            await loop.create_connection(lambda: backend, sock=backend_sock)
        except BaseException:
            client_sock.close()
            backend_sock.close()
            raise
        self._client_end, self._backend_end = client, backend
        client.send(self.answer)
        if from_backend:
            self._relay(backend, from_backend)
        if from_client:
            self._relay(client, from_client)
        for side in (client, backend):
            side.resume()
        try:
            await asyncio.gather(client.lost, backend.lost)
        finally:
            self._stop_timer()
            client.abort()
            backend.abort()

    def _relay(self, src: _Side, data: bytes) -> None:
        """``data`` read from ``src``: forward its whole frames to the other end."""
        self._forward(data, src.scanner, up=src.up, send=src.peer.send)

    def _hung_up(self, src: _Side) -> None:
        """``src`` left: deliver what is on its way to the other end, then hang up
        there too (abort if it takes longer than CLOSE_GRACE)."""
        src.peer.hang_up()
        self._start_timer(CLOSE_GRACE)

    # -- the relay on tornado streams (the fallback) --------------------------------

    async def _run_on_streams(self) -> None:
        self._client_end = _StreamEnd(self.client)
        self._backend_end = _StreamEnd(self.backend)
        for stream in (self.client, self.backend):
            stream.set_nodelay(True)
        try:
            self.client.write(self.answer)
            await asyncio.gather(
                self._pump(self.client, self.backend, self.upward, up=True),
                self._pump(self.backend, self.client, self.downward, up=False),
            )
        except StreamClosedError:
            pass  # the client left before its answer went out
        finally:
            self._stop_timer()
            self.client.close()
            self.backend.close()

    async def _pump(self, src: IOStream, dst: IOStream, scanner: FrameScanner, *, up: bool) -> None:
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                data = await src.read_bytes(READ_SIZE, partial=True)
                written = self._forward(data, scanner, up=up, send=dst.write)
                if written is None:
                    continue
                pending = written
                if (
                    not self.closing
                    and dst.writing()
                    and write_backlog(dst, HIGH_WATER + 1) > HIGH_WATER
                ):
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

    # -- what both relays do with each read, and closing ------------------------------

    def _forward(
        self, data: bytes, scanner: FrameScanner, *, up: bool, send: Callable[[bytes], Any]
    ) -> Any:
        """Scan ``data`` read from one end and ``send`` its whole frames to the
        other; what ``send`` returned, or None when nothing was sent."""
        if self.closing:
            return None  # the close answer and anything after it: not relayed
        out, violation = scanner.feed(data)
        sent = None
        if out:
            sent = send(out)
            if up:
                self.bytes_up += len(out)
            else:
                self.bytes_down += len(out)
        if violation:
            self._refuse(violation)
        else:
            self.on_activity()
        return sent

    # -- closing, whichever relay runs ----------------------------------------------

    def _refuse(self, code: int) -> None:
        """A frame one end must not send: close both ends with ``code``, forward nothing more."""
        what = "message over the size limit" if code == CLOSE_TOO_BIG else "protocol error"
        log.info("lims-bridge: proxy: websocket %s; closing with %s", what, code)
        self._close_both(code, CLOSE_GRACE)

    def close_policy(self) -> None:
        """The client is no longer admitted (token revoked or expired, proxy mode
        changed): close both ends with 1008 at once and relay nothing more;
        hang up for good after a second."""
        if not self.closing:
            self._close_both(CLOSE_POLICY, 1.0)

    def _close_both(self, code: int, grace: float) -> None:
        self.closing = True
        # an end gets a close frame only where its direction is between frames
        # (the offending direction's scanner stopped before the bad frame);
        # else a plain hang-up must do: never a frame inside another one
        for end, masked, between_frames in (
            (self._client_end, False, self.downward.at_boundary()),
            (self._backend_end, True, self.upward.at_boundary()),
        ):
            if end is None:
                continue
            if between_frames:
                end.send(close_frame(code, masked=masked))
            else:
                end.abort()
        if self.upward.close_code is None:
            self.upward.close_code = code
        # both ends answer the close and hang up; don't wait on them forever
        self._start_timer(grace)

    def _start_timer(self, grace: float) -> None:
        if self._close_timer is None:
            loop = asyncio.get_running_loop()
            self._close_timer = loop.call_later(grace, self._abort)

    def _stop_timer(self) -> None:
        if self._close_timer is not None:
            self._close_timer.cancel()

    def _abort(self) -> None:
        for end in (self._client_end, self._backend_end):
            if end is not None:
                end.abort()


class _Side(asyncio.Protocol):
    """One end of a tunnel on an asyncio transport: what it reads goes through
    its ``scanner`` to its ``peer``; when its peer's socket is full, it stops
    reading (backpressure, HIGH_WATER bytes pending)."""

    def __init__(self, tunnel: Tunnel, scanner: FrameScanner, *, up: bool) -> None:
        self.tunnel = tunnel
        self.scanner = scanner
        self.up = up  # whether this is the client's end (its bytes go up)
        self.peer: _Side = self
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._held_back = False  # reading paused for the peer's backlog

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER)
        transport.pause_reading()  # until the tunnel starts (Tunnel._run_on_transports)

    def resume(self) -> None:
        if self.transport is not None and not self._held_back and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.tunnel._relay(self, data)

    def eof_received(self) -> bool:
        self.tunnel._hung_up(self)
        return False  # close this end as well

    def connection_lost(self, exc: Exception | None) -> None:
        self.tunnel._hung_up(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        # this end's reader is behind: stop reading what would be sent to it
        peer = self.peer
        peer._held_back = True
        if peer.transport is not None and not peer.transport.is_closing():
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        peer._held_back = False
        peer.resume()

    def send(self, data: bytes | memoryview) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def hang_up(self) -> None:
        """Close once what was sent has gone out."""
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _StreamEnd:
    """One end of a tunnel relayed by :meth:`Tunnel._pump` over a tornado stream."""

    def __init__(self, stream: IOStream) -> None:
        self.stream = stream

    def send(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except StreamClosedError:
            pass

    def abort(self) -> None:
        self.stream.close()


_End = _Side | _StreamEnd


__all__ = [
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "FrameScanner",
    "Tunnel",
    "close_frame",
]
