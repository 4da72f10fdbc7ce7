"""The websocket tunnel's frame scanner, on frames cut at every possible place.

Given a stream of websocket frames (masked as a client sends them, or not, as
a backend does), when it arrives in pieces of any size, then exactly the bytes
of whole frames under the size limit are forwarded, messages are counted once
however fragmented, and the close code is seen.
"""

from __future__ import annotations

import os

import pytest

from jupyter_lims_bridge.tunnel import FrameScanner, close_frame


def frame(payload: bytes, *, opcode: int = 0x2, fin: bool = True, masked: bool = False) -> bytes:
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, (0x80 if masked else 0) | n))
    elif n < 1 << 16:
        head = bytes((first, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def feed_in_pieces(scanner: FrameScanner, data: bytes, size: int) -> tuple[bytes, bool]:
    out = b""
    for i in range(0, len(data), size):
        forwarded, too_big = scanner.feed(data[i : i + size])
        out += bytes(forwarded)
        if too_big:
            return out, True
    return out, False


@pytest.mark.parametrize("masked", [False, True])
def test_every_cut_forwards_exactly_the_frames(masked):
    stream = (
        frame(b"hi", masked=masked)
        + frame(b"p", opcode=0x9, masked=masked)  # a ping: not a message
        + frame(b"x" * 200, opcode=0x1, masked=masked)  # 16-bit length
        + frame(b"y" * 70_000, masked=masked)  # 64-bit length
        + frame(b"", masked=masked)
    )
    for size in [*range(1, 16), 199, 4096, len(stream)]:
        scanner = FrameScanner(limit=100_000)
        out, too_big = feed_in_pieces(scanner, stream, size)
        assert not too_big
        assert out == stream, size
        assert scanner.messages == 4
        assert scanner.at_boundary()


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_a_message_over_the_limit_is_not_forwarded(size):
    ok = frame(b"a" * 10, masked=True)
    stream = ok + frame(b"b" * 2000, masked=True) + frame(b"c", masked=True)
    scanner = FrameScanner(limit=1000)
    out, too_big = feed_in_pieces(scanner, stream, size)
    assert too_big
    assert out == ok  # nothing of the big frame's header or payload went out


def test_fragments_add_up_and_control_frames_in_between_do_not_count():
    first = frame(b"a" * 600, opcode=0x1, fin=False)
    ping = frame(b"p" * 100, opcode=0x9)
    rest = frame(b"a" * 600, opcode=0x0)
    scanner = FrameScanner(limit=1000)
    out, too_big = scanner.feed(first + ping + rest)
    assert too_big and bytes(out) == first + ping
    scanner = FrameScanner(limit=1300)
    out, too_big = scanner.feed(first + ping + rest)
    assert not too_big and bytes(out) == first + ping + rest
    assert scanner.messages == 1


@pytest.mark.parametrize("masked", [False, True])
def test_close_code_is_seen(masked):
    scanner = FrameScanner(limit=10)
    scanner.feed(frame(b"hi", masked=masked) + frame((4001).to_bytes(2, "big") + b"bye",
                                                      opcode=0x8, masked=masked))
    assert scanner.close_code == 4001


@pytest.mark.parametrize("masked", [False, True])
def test_close_frame_reads_back(masked):
    scanner = FrameScanner(limit=10)
    out, _ = scanner.feed(close_frame(1009, masked=masked))
    assert scanner.close_code == 1009 and scanner.at_boundary() and len(out) == (8 if masked else 4)
