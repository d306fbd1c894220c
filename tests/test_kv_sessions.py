"""kv.sessions through the state machine: exactly-once, acks, bounds, expiry."""

from __future__ import annotations

import pytest

from kv.errors import InvalidRequest, SessionExpired, StaleRequest
from kv.limits import Limits
from kv.requests import Put, Range
from kv.responses import PutResponse, ResponseHeader, result_from_plain, result_to_plain
from kv.sessions import SessionTable
from kv.state_machine import Command

from tests.test_kv_helpers import Driver


def put(client, seq, ack, key=b"k", value=b"v"):
    return Command(client, seq, ack, Put(key, value))


def test_retry_in_a_later_entry_is_applied_once_and_answered_the_same():
    d = Driver()
    first = d.apply(put("c", 1, 1, b"a", b"1"), put("c", 2, 1, b"b", b"1"))
    assert d.sm.revision == 3
    again = d.apply(put("c", 2, 1, b"b", b"1"), put("c", 1, 1, b"a", b"1"))
    assert again == [first[1], first[0]]
    assert again[0] is first[1]  # the very same remembered result
    assert d.sm.revision == 3
    assert d.sm.read(Range(b"a"), 1).kvs[0].version == 1


def test_retry_within_one_entry():
    d = Driver()
    r = d.apply(put("c", 1, 1), put("c", 1, 1), put("c", 1, 1))
    assert r[0] is r[1] is r[2]
    assert d.sm.revision == 2


def test_many_in_flight_out_of_order():
    d = Driver()
    d.apply(put("c", 3, 1, b"c3"))
    d.apply(put("c", 1, 1, b"c1"), put("c", 2, 1, b"c2"))
    d.apply(put("c", 2, 1, b"c2"), put("c", 3, 1, b"c3"), put("c", 1, 1, b"c1"))
    assert d.sm.revision == 4
    assert d.sm.sessions.remembered("c") == [1, 2, 3]


def test_ack_frees_results_and_stale_seq_is_refused():
    d = Driver()
    d.apply(*(put("c", s, 1, f"k{s}") for s in range(1, 6)))
    assert d.sm.sessions.remembered("c") == [1, 2, 3, 4, 5]
    (r,) = d.apply(put("c", 6, 4, b"k6"))
    assert isinstance(r, PutResponse)
    assert d.sm.sessions.remembered("c") == [4, 5, 6]
    rev = d.sm.revision
    (stale,) = d.apply(put("c", 2, 4, b"k2"))
    assert isinstance(stale, StaleRequest) and "already acknowledged" in str(stale)
    assert d.sm.revision == rev  # not applied
    # an ack that goes backwards changes nothing
    (stale,) = d.apply(put("c", 3, 1, b"k3"))
    assert isinstance(stale, StaleRequest)
    assert d.sm.sessions.remembered("c") == [4, 5, 6]


def test_errors_are_remembered_too():
    d = Driver()
    (err,) = d.apply(Command("c", 1, 1, Range(b"a", revision=99)))
    d.ok(Put(b"x", b"1"))
    (again,) = d.apply(Command("c", 1, 1, Range(b"a", revision=99)))
    assert again is err


def test_invalid_seq_or_ack():
    d = Driver()
    (r,) = d.apply(put("c", 0, 0))
    assert isinstance(r, InvalidRequest)
    (r,) = d.apply(put("c", 1, -1))
    assert isinstance(r, InvalidRequest)
    assert d.sm.revision == 1


def test_anonymous_commands_are_not_deduplicated():
    d = Driver()
    d.apply(put("", 1, 1), put("", 1, 1))
    d.apply(put("", 1, 1))
    assert d.sm.revision == 4
    assert len(d.sm.sessions) == 0


def test_result_bound_evicts_lowest_seqs_and_refuses_them_after():
    d = Driver(Limits(max_session_results=3))
    d.apply(*(put("c", s, 1, f"k{s}") for s in range(1, 6)))
    assert d.sm.sessions.remembered("c") == [3, 4, 5]
    rev = d.sm.revision
    (r,) = d.apply(put("c", 2, 1, b"k2"))
    assert isinstance(r, StaleRequest) and "oldest remembered" in str(r)
    (r,) = d.apply(put("c", 1, 1, b"k1"))
    assert isinstance(r, StaleRequest)
    assert d.sm.revision == rev  # neither re-applied
    (r,) = d.apply(put("c", 4, 1, b"k4"))
    assert isinstance(r, PutResponse) and r.header.revision == 5  # remembered


def test_session_bound_evicts_least_recently_used():
    d = Driver(Limits(max_sessions=2))
    d.apply(put("a", 1, 1))
    d.apply(put("b", 1, 1))
    d.apply(put("a", 2, 1))  # a is now more recent than b
    d.apply(put("c", 1, 1))  # evicts b
    assert "b" not in d.sm.sessions and "a" in d.sm.sessions and "c" in d.sm.sessions
    (r,) = d.apply(put("b", 2, 2))  # b has acknowledged seq 1: its session is gone
    assert isinstance(r, SessionExpired)
    assert "b" not in d.sm.sessions


def test_session_ttl_uses_the_clock_in_the_log():
    d = Driver(Limits(session_ttl=10), now=100.0)
    d.apply(put("a", 1, 1))
    d.apply(put("b", 1, 1), now=105.0)
    d.apply(put("x", 1, 1), now=110.0)  # a idle exactly 10 s: kept
    assert "a" in d.sm.sessions
    d.apply(put("x", 2, 1), now=110.5)  # a idle 10.5 s: expired
    assert "a" not in d.sm.sessions and "b" in d.sm.sessions
    (r,) = d.apply(put("a", 2, 2), now=110.5)
    assert isinstance(r, SessionExpired)
    # an unknown client that has acknowledged nothing starts afresh
    (r,) = d.apply(put("a", 1, 1), now=110.5)
    assert isinstance(r, PutResponse)


def test_clock_going_backwards_is_ignored():
    d = Driver(Limits(session_ttl=10), now=100.0)
    d.apply(put("a", 1, 1))
    d.apply(put("b", 1, 1), now=200.0)  # a expires here
    assert "a" not in d.sm.sessions
    d.apply(put("c", 1, 1), now=50.0)  # a new leader with a slower clock
    assert d.sm.now == 200.0
    d.apply(put("d", 1, 1), now=205.0)
    assert all(cid in d.sm.sessions for cid in "bcd")
    d.apply(put("d", 2, 1), now=211.0)  # b, c last seen at 200: idle 11 s
    assert "b" not in d.sm.sessions and "c" not in d.sm.sessions and "d" in d.sm.sessions


def test_table_plain_round_trip_preserves_lru_order_and_results():
    limits = Limits(max_sessions=2)
    t = SessionTable(limits)
    assert t.begin("a", 1, 1, 1.0) is None
    t.remember("a", 1, StaleRequest("x"))
    assert t.begin("b", 1, 1, 2.0) is None
    t.remember("b", 1, PutResponse(ResponseHeader(2, 1)))
    t2 = SessionTable.from_plain(t.to_plain(result_to_plain), limits, result_from_plain)
    assert t2.to_plain(result_to_plain) == t.to_plain(result_to_plain)
    assert isinstance(t2.begin("a", 1, 1, 3.0), StaleRequest)  # remembered error
    assert t2.begin("c", 1, 1, 3.0) is None  # evicts b, now the least recently used
    assert "b" not in t2 and "a" in t2


@pytest.mark.parametrize("bad", [None, [["a", 1]], [["a", 1, 0, 1.0, [1]]]])
def test_table_from_plain_rejects_malformed(bad):
    with pytest.raises(InvalidRequest):
        SessionTable.from_plain(bad, Limits(), lambda p: p)
