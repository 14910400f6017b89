from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ka.transport.errors import ProtocolError
from ka.transport.frame import (
    DATA,
    END,
    PREFIX,
    EndOfStream,
    chunk_key,
    encode_frame,
    frame_payload,
    parse_header,
    session_key,
    subkey,
    verify_frame,
)

KEY = subkey(session_key(b"secret"), b"chunk")


@given(st.binary(max_size=4096), st.integers(0, 2**40), st.booleans())
def test_roundtrip(payload: bytes, offset: int, flag: bool) -> None:
    frame = encode_frame(KEY, DATA, payload, offset=offset, raw_length=len(payload) + 7,
                         flags=int(flag))
    header = verify_frame(KEY, frame, offset)
    assert (header.kind, header.flags, header.length) == (DATA, int(flag), len(payload))
    assert header.raw_length == len(payload) + 7
    assert bytes(frame_payload(frame)) == payload
    assert len(frame) == PREFIX + len(payload)


@given(st.binary(min_size=1, max_size=512), st.data())
def test_any_flipped_bit_is_detected(payload: bytes, data: st.DataObject) -> None:
    frame = bytearray(encode_frame(KEY, DATA, payload, offset=1000))
    i = data.draw(st.integers(0, len(frame) - 1))
    frame[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(ProtocolError):
        verify_frame(KEY, frame, 1000)


def test_frame_replayed_at_another_offset_is_rejected() -> None:
    frame = encode_frame(KEY, DATA, b"x" * 100, offset=0)
    with pytest.raises(ProtocolError, match="offset"):
        verify_frame(KEY, frame, len(frame))


def test_wrong_key_is_rejected() -> None:
    frame = encode_frame(KEY, DATA, b"payload", offset=0)
    other = subkey(session_key(b"other"), b"chunk")
    with pytest.raises(ProtocolError, match="MAC"):
        verify_frame(other, frame, 0)


def test_a_frame_of_another_session_under_the_same_key_is_rejected() -> None:
    root = session_key(b"s" * 32)
    old_session = encode_frame(chunk_key(root, b"o" * 16), DATA, b"payload", offset=0)
    with pytest.raises(ProtocolError, match="MAC"):
        verify_frame(chunk_key(root, b"n" * 16), old_session, 0)
    verify_frame(chunk_key(root, b"o" * 16), old_session, 0)


def test_open_session_key_differs_from_keyed() -> None:
    assert session_key(None) != session_key(b"")
    assert len(session_key(None)) == 32


def test_end_of_stream_roundtrip() -> None:
    eos = EndOfStream(123456789012, 987654321, bytes(range(32)))
    frame = encode_frame(KEY, END, eos.encode(), offset=5, raw_length=0)
    header = verify_frame(KEY, frame, 5)
    assert header.kind == END
    assert EndOfStream.decode(frame_payload(frame)) == eos


@given(st.binary(min_size=PREFIX, max_size=PREFIX))
def test_garbage_headers_never_crash(data: bytes) -> None:
    try:
        header = parse_header(data)
    except ProtocolError:
        return
    assert header.length <= 16 * 1024 * 1024


def test_truncated_frame() -> None:
    frame = encode_frame(KEY, DATA, b"abcdef", offset=0)
    with pytest.raises(ProtocolError):
        verify_frame(KEY, frame[:-1], 0)


def test_seal_is_its_own_inverse_and_never_repeats_its_keystream() -> None:
    from ka.transport.frame import Sealer, seal_key

    k1 = seal_key(session_key(b"secret"), b"salt-one........")
    k2 = seal_key(session_key(b"secret"), b"salt-two........")
    text = b"plain text of the stream " * 100
    sender, node = Sealer(k1), Sealer(k1)
    first, second = sender.apply(text), sender.apply(text)
    assert first != text and len(first) == len(text)
    assert second != first  # the next frame takes the keystream on: no pad used twice
    assert node.apply(first) == text and node.apply(second) == text  # in frame order
    assert Sealer(k2).apply(text) != first  # another session, another keystream
    assert Sealer(k1).apply(b"") == b""


def test_a_frame_sealed_in_place_is_the_frame_of_the_sealed_payload() -> None:
    from ka.transport.frame import FLAG_SEALED, FLAG_ZSTD, Sealer, seal_key

    key = seal_key(session_key(b"secret"), b"salt-one........")
    payload = os.urandom(5000)
    in_place = encode_frame(KEY, DATA, payload, offset=640, raw_length=9000, flags=FLAG_ZSTD,
                            sealed_with=Sealer(key))
    assert in_place == encode_frame(KEY, DATA, Sealer(key).apply(payload), offset=640,
                                    raw_length=9000, flags=FLAG_ZSTD | FLAG_SEALED)
    header = verify_frame(KEY, in_place, 640)
    assert header.flags == FLAG_ZSTD | FLAG_SEALED
    assert Sealer(key).apply(frame_payload(in_place)) == payload


def test_a_stream_longer_than_one_nonce_allows_is_sealed_in_segments() -> None:
    # ChaCha20's 32-bit block counter: one nonce covers 256 GiB, and cryptography refuses to
    # go past it (a disk is bigger). Shown here near the counter's end, then the segments.
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    from ka.transport.frame import SEAL_SEGMENT, Sealer, seal_key

    key = seal_key(session_key(b"secret"), b"salt-one........")
    near_end = (2**32 - 1).to_bytes(4, "little") + bytes(12)
    with pytest.raises(ValueError, match="overflow"):
        Cipher(algorithms.ChaCha20(key, near_end), mode=None).encryptor().update(bytes(128))
    assert SEAL_SEGMENT <= 2**32 * 64

    frames = [os.urandom(n) for n in (600, 300, 600, 1000, 1, 999)]
    sender, node = Sealer(key, segment=1000), Sealer(key, segment=1000)
    sealed = [sender.apply(f) for f in frames]
    assert [node.apply(s) for s in sealed] == frames  # both sides cut at the same frames
    zeros = Sealer(key, segment=1000)
    pads = [zeros.apply(bytes(len(f))) for f in frames]  # each frame's keystream
    # segments start at frames 0, 2, 3, 4 (600+300 fit in 1000, 600 does not fit after them)
    starts = [pads[0], pads[2], pads[3], pads[4] + pads[5]]
    assert len({s[:300] for s in starts}) == 4  # no segment's keystream is another's
    assert pads[1] == Sealer(key, segment=1000).apply(bytes(900))[600:]  # one keystream within
    with pytest.raises(ValueError, match="segment"):
        Sealer(key, segment=1000).apply(bytes(1001))
