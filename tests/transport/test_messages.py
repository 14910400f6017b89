"""The control messages and the status service's: each kind survives the wire, anything else
is refused once, when it arrives, and docs/transport.md lists exactly what the modules define."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ka.transport import messages, status_messages
from ka.transport.messages import (
    KINDS,
    Attach,
    Done,
    Join,
    MessageError,
    NodeState,
    Ok,
    Outcome,
    Plan,
    Pos,
    Sons,
    SonTicket,
    decode,
    encode,
)
from ka.transport.status_messages import STATUS, Bye, Exec, ExecResult, Hello, LogLine

DOC = Path(__file__).parents[2] / "docs" / "transport.md"

SAMPLES = [
    Join(3, name="n1", port=4000, wait_release=True),
    Join(3, go_now=True),
    Pos(10, 5, False),
    messages.Failing("exit 1"),
    messages.Lost("10.0.0.2:4000", 1024, "reset", bad_key=False),
    Done(True, 100, "ab" * 32, 0, None, 1.5, "YQ=="),
    Done(False, 0, "", None, "no consumer", 0.0),
    messages.Welcome("10.0.0.3:4000", 1 << 20, "00" * 16),
    messages.Refused("too late"),
    Plan("", "", 5000, 1, 1, "t" * 32),
    Sons((SonTicket("a:1", "x"), SonTicket("b:2", "y"))),
    Sons(()),
    messages.DropSon("a:1"),
    messages.Evict("no heartbeat"),
    messages.Abort("stopped"),
    messages.Ping(),
    messages.Finish(),
    Ok(),
    Ok(4096),
    Attach("a:1", 0, "x"),
    messages.No("not assigned"),
]


def test_every_kind_has_a_sample_and_survives_the_wire() -> None:
    assert {type(m) for m in SAMPLES} == set(KINDS.values())
    for msg in SAMPLES:
        assert decode(encode(msg)) == msg


def test_the_wire_is_one_json_object_with_its_kind_under_t() -> None:
    assert json.loads(encode(Attach("a:1", 7, "x"))) == {
        "t": "attach", "id": "a:1", "offset": 7, "ticket": "x"}
    assert json.loads(encode(Sons((SonTicket("a", "x"),)))) == {
        "t": "sons", "sons": [{"id": "a", "ticket": "x"}]}


def test_a_float_field_takes_an_integer_and_optional_fields_may_be_absent() -> None:
    done = decode(b'{"t":"done","ok":true,"bytes":1,"digest":"d","consumer_status":0,'
                  b'"reason":null,"seconds":2}')
    assert isinstance(done, Done) and done.seconds == 2.0 and done.attachment is None
    assert decode(b'{"t":"join","protocol":3}') == Join(3)


@pytest.mark.parametrize(("wire", "says"), [
    (b"not json", "malformed"),
    (b"[1, 2]", "malformed"),
    (b'{"kind": "pos"}', "malformed"),
    (b'{"t": 3}', "malformed"),
    (b'{"t": "report"}', "unknown control message"),
    (b'{"t": "pos", "received": 1, "consumed": 1}', "'ended' missing"),
    (b'{"t": "pos", "received": "1", "consumed": 1, "ended": false}', "pos.received"),
    (b'{"t": "pos", "received": true, "consumed": 1, "ended": false}', "bool is not int"),
    (b'{"t": "pos", "received": 1.5, "consumed": 1, "ended": false}', "float is not int"),
    (b'{"t": "pos", "received": 1, "consumed": 1, "ended": 0}', "int is not bool"),
    (b'{"t": "pos", "received": 1, "consumed": 1, "ended": false, "x": 1}', "unknown field"),
    (b'{"t": "attach", "id": "a", "offset": 0, "ticket": null}', "NoneType is not str"),
    (b'{"t": "sons", "sons": {"id": "a", "ticket": "x"}}', "sons.sons"),
    (b'{"t": "sons", "sons": [{"id": "a"}]}', "'ticket' missing"),
    (b'{"t": "sons", "sons": ["a"]}', "expected an object"),
    (b'{"t": "join", "protocol": 3, "port": "4000"}', "join.port"),
])
def test_a_message_that_is_not_ours_is_refused_when_decoded(wire: bytes, says: str) -> None:
    with pytest.raises(MessageError, match=re.escape(says)):
        decode(wire)


def test_states_and_outcomes_are_their_words() -> None:
    assert NodeState.EVICTED == "evicted" and json.dumps(Outcome.OK) == '"ok"'


STATUS_SAMPLES = [
    Hello("node07", "extract /", exec=True),
    LogLine("mkfs.ext4 /dev/sda2", "format"),
    Bye(),
    Exec(("uname", "-a")),
    ExecResult(0, "Linux\n", ""),
    ExecResult(None, refused="this node was started without --allow-exec"),
]


def test_every_status_kind_has_a_sample_and_survives_the_wire() -> None:
    assert {type(m) for m in STATUS_SAMPLES} == set(STATUS.kinds.values())
    for msg in STATUS_SAMPLES:
        assert STATUS.decode(encode(msg)) == msg
    # the wire the status service spoke before its messages were typed
    assert json.loads(encode(ExecResult(None, refused="no"))) == {
        "t": "exec-result", "status": None, "stdout": "", "stderr": "", "refused": "no"}


@pytest.mark.parametrize(("wire", "says"), [
    (b'{"t": "pos", "received": 1, "consumed": 1, "ended": false}', "unknown status message"),
    (b'{"t": "exec", "argv": "rm -rf /"}', "exec.argv: str is not list"),
    (b'{"t": "exec", "argv": ["ls", 1]}', "exec.argv: int is not str"),
    (b'{"t": "log", "line": "x"}', "'step' missing"),
    (b'{"t": "hello", "node": "n", "step": "", "exec": "yes"}', "hello.exec"),
    (b'not json', "malformed status message"),
])
def test_a_status_message_that_is_not_ours_is_refused_when_decoded(wire: bytes,
                                                                   says: str) -> None:
    with pytest.raises(MessageError, match=re.escape(says)):
        STATUS.decode(wire)


def test_the_two_protocols_do_not_take_each_others_messages() -> None:
    with pytest.raises(MessageError, match="unknown control message"):
        decode(encode(Exec(("true",))))
    with pytest.raises(MessageError, match="unknown status message"):
        STATUS.decode(encode(Pos(1, 1, False)))


@pytest.mark.parametrize(("section", "module"), [
    ("control messages", messages), ("status messages", status_messages)])
def test_the_documentation_lists_exactly_the_messages_of_the_module(section: str,
                                                                   module: object) -> None:
    text = DOC.read_text()
    begin, end = f"<!-- {section}: begin -->\n", f"<!-- {section}: end -->"
    assert begin in text and end in text
    table = text[text.index(begin) + len(begin):text.index(end)]
    expected = module.reference()  # type: ignore[attr-defined]
    assert table == expected, (
        f"docs/transport.md is out of step with {module.__name__}; "  # type: ignore[attr-defined]
        "its table should be:\n" + expected)
