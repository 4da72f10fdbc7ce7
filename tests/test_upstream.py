"""The chunked-body scanner of the upstream exchange, on bodies cut at every place.

Given a chunked response body from a backend (extensions, trailers, any case of
hex digits), when it arrives in pieces of any size, then exactly the bytes of
the body are counted as the body's, its end is seen once, and a body that a
client could end elsewhere (a malformed size line, data longer than its size,
lines not ended by CRLF) is refused.
"""

from __future__ import annotations

import pytest

from jupyter_lims_bridge.proxy.upstream import ChunkedScanner


def chunked(*pieces: bytes, trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return body + b"0\r\n" + trailer + b"\r\n"


def scan_in_pieces(data: bytes, size: int) -> tuple[int, bool]:
    """Bytes counted as the body's, and whether its end was seen."""
    scanner = ChunkedScanner()
    used = 0
    for i in range(0, len(data), size):
        piece = bytearray(data[i : i + size])
        n = scanner.feed(piece, len(piece))
        used += n
        if scanner.done:
            return used, True
        assert n == len(piece)  # before the end, every byte is the body's
    return used, scanner.done


BODIES = [
    chunked(b"hello", b"x" * 300, b"world"),
    chunked(),  # no data at all
    chunked(b"y" * 70_000, trailer=b"Expires: never\r\nX-Sum: 1\r\n"),
    b"A;name=value\r\n" + b"z" * 10 + b"\r\n" + b"0;last\r\n\r\n",  # extensions, upper case
    b"00000a \t;x=1\r\n" + b"q" * 10 + b"\r\n0\r\n\r\n",  # leading zeros, space before ";"
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
def test_every_cut_finds_the_end_of_the_body(body):
    for size in [*range(1, 12), 299, 4096, len(body)]:
        used, done = scan_in_pieces(body, size)
        assert done, size
        assert used == len(body), size


def test_bytes_after_the_body_are_not_the_bodys():
    body = chunked(b"abc")
    scanner = ChunkedScanner()
    data = bytearray(body + b"HTTP/1.1 200 OK\r\n\r\n")
    assert scanner.feed(data, len(data)) == len(body)
    assert scanner.done


def test_a_body_cut_short_is_not_done():
    body = chunked(b"abc" * 100)
    for cut in (1, 5, 50, len(body) - 1):
        used, done = scan_in_pieces(body[:cut], 7)
        assert not done and used == cut


@pytest.mark.parametrize(
    "bad",
    [
        b"0x10\r\n" + b"a" * 16 + b"\r\n0\r\n\r\n",  # int() would take it, a client may not
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-1\r\n",
        b"1_0\r\n",
        b" 5\r\nhello\r\n0\r\n\r\n",
        b"5 \r\nhello\r\n0\r\n\r\n",  # whitespace without an extension
        b"5\nhello\r\n0\r\n\r\n",  # LF alone
        b"5\r\nhello!\r\n0\r\n\r\n",  # data longer than its size
        b"11111111111111111\r\n",  # over 2^64
        b"5" * 2000 + b"\r\n",  # a size line over 1 KiB
        b"0\r\nX: " + b"t" * 70_000 + b"\r\n\r\n",  # a trailer over 64 KiB
    ],
)
def test_framing_a_client_could_read_differently_is_refused(bad):
    for size in (1, 3, len(bad)):
        with pytest.raises(ValueError):
            scan_in_pieces(bad, size)
