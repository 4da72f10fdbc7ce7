"""The websocket tunnel's frame scanner, on frames cut at every possible place.

Given a stream of websocket frames (masked as a client sends them, or not, as
a backend does), when it arrives in pieces of any size, then exactly the bytes
of whole frames under the size limit are forwarded, messages are counted once
however fragmented, and the close code is seen.
"""

from __future__ import annotations

import os

import pytest

from jupyter_lims_bridge.proxy.tunnel import FrameScanner, close_frame


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
    scanner.feed(
        frame(b"hi", masked=masked)
        + frame((4001).to_bytes(2, "big") + b"bye", opcode=0x8, masked=masked)
    )
    assert scanner.close_code == 4001


@pytest.mark.parametrize("masked", [False, True])
def test_close_frame_reads_back(masked):
    scanner = FrameScanner(limit=10)
    out, _ = scanner.feed(close_frame(1009, masked=masked))
    assert scanner.close_code == 1009 and scanner.at_boundary() and len(out) == (8 if masked else 4)


# -- protocol errors (issue #9, item 8) ------------------------------------------------


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
def test_an_oversized_control_frame_is_a_protocol_error(masked, size):
    # Given a "ping" declaring 2^40 bytes (control frames were not counted
    # against the size limit, so its payload passed whatever its size)
    ok = frame(b"a" * 10, masked=masked)
    head = bytes((0x89, (0x80 if masked else 0) | 127)) + (1 << 40).to_bytes(8, "big")
    if masked:
        head += b"\x00\x00\x00\x00"
    stream = ok + head + b"x" * 5000
    scanner = FrameScanner(limit=1000)
    forwarded = b""
    violation = 0
    for i in range(0, len(stream), size):
        out, violation = scanner.feed(stream[i : i + size])
        forwarded += bytes(out)
        if violation:
            break
    # Then nothing of it is forwarded and the session ends with 1002
    assert violation == 1002
    assert forwarded == ok


@pytest.mark.parametrize(
    "bad",
    [
        frame(b"p" * 126, opcode=0x9),  # ping over 125 bytes
        frame(b"p" * 126, opcode=0xA),  # pong over 125 bytes
        frame((1000).to_bytes(2, "big") + b"r" * 124, opcode=0x8),  # close over 125
        frame(b"p", opcode=0x9, fin=False),  # fragmented control frame
        frame(b"c", opcode=0x8, fin=False),
        *(frame(b"r", opcode=op) for op in (0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF)),
    ],
)
def test_control_frame_rules_and_reserved_opcodes(bad):
    ok = frame(b"hello")
    scanner = FrameScanner(limit=10_000)
    out, violation = scanner.feed(ok + bad + frame(b"after"))
    assert violation == 1002
    assert bytes(out) == ok


def test_control_frames_within_the_rules_pass():
    stream = (
        frame(b"p" * 125, opcode=0x9)
        + frame(b"", opcode=0xA)
        + frame((1000).to_bytes(2, "big") + b"r" * 123, opcode=0x8)
    )
    scanner = FrameScanner(limit=10)
    out, violation = scanner.feed(stream)
    assert violation == 0 and bytes(out) == stream
