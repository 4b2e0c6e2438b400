"""ttrpc codec: golden frames (hand-derived from the ttrpc v1.1 wire format) and the
incremental decoder. No I/O."""

import pytest

from proto.ttrpc import ttrpc_pb2
from proto.ttrpc import ttrpc_lite
from shim.ttrpc import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    MESSAGE_TYPE_REQUEST,
    MESSAGE_TYPE_RESPONSE,
    Code,
    Frame,
    FrameDecoder,
    OversizedFrame,
    TTRPCError,
    decode_request,
    decode_response,
    encode_frame,
    encode_request,
    encode_response,
)

# Task/State request as containerd 1.6 sends it: StateRequest{id: "c1"} in namespace
# "default". Field by field:
#   0a 17 "containerd.task.v2.Task"              service (1), 23 bytes
#   12 05 "State"                                method (2)
#   1a 04 0a 02 "c1"                             payload (3) = StateRequest{id}
#   2a 25 0a 1a "containerd-namespace-ttrpc"     metadata (5) KeyValue{key (1),
#         12 07 "default"                                          value (2)}
STATE_BODY = bytes.fromhex(
    "0a17636f6e7461696e6572642e7461736b2e76322e5461736b"
    "12055374617465"
    "1a040a026331"
    "2a250a1a636f6e7461696e6572642d6e616d6573706163652d7474727063120764656661756c74"
)
# header: length 0x4d (77), stream 1, type 1 (request), flags 0
STATE_FRAME = bytes.fromhex("0000004d" "00000001" "01" "00") + STATE_BODY
# OK reply with empty payload, as Go ttrpc sends it: a header and no body at all.
EMPTY_OK_FRAME = bytes.fromhex("00000000" "00000003" "02" "00")
# Response{status: Status{code: 5, message: "not found"}}
NOT_FOUND_BODY = bytes.fromhex("0a0d" "0805" "1209" "6e6f7420666f756e64")


def test_constants():
    assert (HEADER_SIZE, MAX_MESSAGE_SIZE) == (10, 4194304)
    assert (MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE) == (1, 2)


def test_code_values_match_grpc():
    expected = {
        "OK": 0, "CANCELED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
        "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9,
        "UNIMPLEMENTED": 12, "UNAVAILABLE": 14,
    }
    assert {name: int(Code[name]) for name in expected} == expected


def test_golden_state_request_encode():
    body = encode_request(
        "containerd.task.v2.Task", "State", b"\x0a\x02c1",
        metadata={"containerd-namespace-ttrpc": "default"},
    )
    assert body == STATE_BODY
    assert encode_frame(1, MESSAGE_TYPE_REQUEST, body) == STATE_FRAME


def test_golden_state_request_decode():
    [frame] = FrameDecoder().feed(STATE_FRAME)
    assert (frame.stream_id, frame.type, frame.flags) == (1, 1, 0)
    req = decode_request(frame.body)
    assert (req.service, req.method, req.payload, req.timeout_nano) == (
        "containerd.task.v2.Task", "State", b"\x0a\x02c1", 0)
    assert [(kv.key, kv.value) for kv in req.metadata] == [("containerd-namespace-ttrpc", "default")]


def test_golden_empty_ok_reply():
    assert encode_frame(3, MESSAGE_TYPE_RESPONSE, encode_response()) == EMPTY_OK_FRAME
    [frame] = FrameDecoder().feed(EMPTY_OK_FRAME)
    assert frame == Frame(stream_id=3, type=2, flags=0, body=b"")
    assert decode_response(frame.body) == (None, b"")


def test_ok_reply_with_payload_has_no_status():
    assert encode_response(b"\x10\x01") == bytes.fromhex("12021001")
    assert decode_response(bytes.fromhex("12021001")) == (None, b"\x10\x01")


def test_explicit_ok_status_is_ok():
    body = encode_response(b"x", ttrpc_lite.Status(code=0, message="fine"))
    assert decode_response(body) == (None, b"x")


def test_golden_error_status():
    body = encode_response(status=ttrpc_lite.Status(code=5, message="not found"))
    assert body == NOT_FOUND_BODY
    status, payload = decode_response(NOT_FOUND_BODY)
    assert (status.code, status.message, payload) == (5, "not found", b"")
    err = TTRPCError.from_status(status)
    assert (err.code, err.message) == (Code.NOT_FOUND, "not found")


def test_request_round_trip_with_timeout_and_repeated_metadata():
    body = encode_request("s", "m", b"\x00\x01", timeout_nano=5_000_000,
                          metadata={"a": ["1", "2"], "b": "3"})
    req = decode_request(body)
    assert (req.service, req.method, req.payload, req.timeout_nano) == ("s", "m", b"\x00\x01", 5_000_000)
    assert [(kv.key, kv.value) for kv in req.metadata] == [("a", "1"), ("a", "2"), ("b", "3")]


@pytest.mark.parametrize("garbage", [b"\xff\xff\xff", b"\x0a\x05ab", b"\x0a\x02\xff\xfe"])
def test_undecodable_request(garbage):
    with pytest.raises(TTRPCError) as info:
        decode_request(garbage)
    assert info.value.code == Code.INVALID_ARGUMENT
    assert info.value.message.startswith("unmarshal request error")


def test_undecodable_response():
    with pytest.raises(TTRPCError) as info:
        decode_response(b"\x0a\x05ab")
    assert info.value.code == Code.UNKNOWN


def test_encode_frame_size_limit():
    assert len(encode_frame(1, 1, bytes(MAX_MESSAGE_SIZE))) == HEADER_SIZE + MAX_MESSAGE_SIZE
    with pytest.raises(TTRPCError) as info:
        encode_frame(1, 1, bytes(MAX_MESSAGE_SIZE + 1))
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert info.value.message == "message length 4194305 exceed maximum message size of 4194304"


def test_decoder_byte_by_byte():
    data = STATE_FRAME + EMPTY_OK_FRAME
    decoder = FrameDecoder()
    events = []
    for i in range(len(data)):
        events += decoder.feed(data[i:i + 1])
        # Nothing may come out before the frame's last byte.
        if i == len(STATE_FRAME) - 2:
            assert events == []
    assert events == [Frame(1, 1, 0, STATE_BODY), Frame(3, 2, 0, b"")]
    assert decoder.idle


def test_decoder_many_frames_one_chunk_and_partial_tail():
    decoder = FrameDecoder()
    events = decoder.feed(EMPTY_OK_FRAME + STATE_FRAME + STATE_FRAME[:5])
    assert [e.stream_id for e in events] == [3, 1]
    assert not decoder.idle
    assert decoder.feed(STATE_FRAME[5:]) == [Frame(1, 1, 0, STATE_BODY)]


def test_decoder_keeps_flags_and_unknown_types():
    [frame] = FrameDecoder().feed(bytes.fromhex("00000001" "00000007" "03" "05") + b"z")
    assert frame == Frame(stream_id=7, type=3, flags=5, body=b"z")


def test_decoder_discards_oversized_body_without_buffering():
    length = MAX_MESSAGE_SIZE + 1
    decoder = FrameDecoder()
    assert decoder.feed(bytes.fromhex("00400001" "00000005" "01" "00")) == []
    chunk = bytes(64 * 1024)
    sent = 0
    while sent + len(chunk) < length:
        assert decoder.feed(chunk) == []
        sent += len(chunk)
        assert len(decoder._buf) == 0  # the body is dropped, never held
    # Last body byte plus the next frame in the same chunk.
    events = decoder.feed(bytes(length - sent) + EMPTY_OK_FRAME)
    assert events == [OversizedFrame(stream_id=5, type=1, flags=0, length=length), Frame(3, 2, 0, b"")]
    assert decoder.idle


def test_error_str_and_unknown_code():
    assert str(TTRPCError(Code.NOT_FOUND, "x")) == "NOT_FOUND: x"
    err = TTRPCError.from_status(ttrpc_lite.Status(code=99, message="new"))
    assert (err.code, str(err)) == (99, "99: new")
    assert err.to_status() == ttrpc_lite.Status(code=99, message="new")
