"""The linearizability checker on hand-made and generated histories (no Ray)."""

from __future__ import annotations

import random
import time

import pytest

from client.linearizability import (
    BUDGET_EXHAUSTED,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    Op,
    check_history,
    check_key,
)


def put(p, key, value, t0, t1, outcome="ok"):
    return Op(p, "put", key, value=value, invoke=t0, complete=None if outcome == "unknown" else t1, outcome=outcome)


def get(p, key, result, t0, t1):
    return Op(p, "get", key, invoke=t0, complete=t1, result=result)


def delete(p, key, result, t0, t1, outcome="ok"):
    return Op(p, "delete", key, invoke=t0, complete=None if outcome == "unknown" else t1, outcome=outcome,
              result=result)


def cas(p, key, old, new, result, t0, t1, outcome="ok"):
    return Op(p, "cas", key, old=old, new=new, invoke=t0, complete=None if outcome == "unknown" else t1,
              outcome=outcome, result=result)


def verdict(ops):
    return check_history(ops, time_budget=10).verdict


# -- hand-made histories ------------------------------------------------------------
def test_empty_and_sequential_histories_are_linearizable():
    assert check_history([]).ok
    ops = [put(1, "x", "a", 0, 1), get(2, "x", "a", 2, 3), delete(1, "x", 1, 4, 5), get(2, "x", None, 6, 7),
           cas(1, "x", "a", "b", False, 8, 9), put(1, "x", "c", 10, 11), cas(2, "x", "c", "d", True, 12, 13),
           get(1, "x", "d", 14, 15), delete(2, "x", 1, 16, 17), delete(1, "x", 0, 18, 19)]
    r = check_history(ops)
    assert r.ok and r.verdict == LINEARIZABLE and r.keys["x"].ok


def test_stale_read_after_a_completed_write_is_caught():
    ops = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 3), get(2, "x", "a", 4, 5)]
    r = check_history(ops)
    assert not r.ok and r.verdict == NOT_LINEARIZABLE
    assert "get('x') -> 'a'" in r.keys["x"].window


def test_a_read_concurrent_with_the_overwrite_may_see_either_value():
    base = [put(1, "x", "a", 0, 1), put(1, "x", "b", 2, 5)]
    assert verdict(base + [get(2, "x", "a", 3, 4)]) == LINEARIZABLE
    assert verdict(base + [get(2, "x", "b", 3, 4)]) == LINEARIZABLE


def test_a_lost_write_is_caught():
    # The put was acknowledged, then every later read sees the key absent.
    ops = [put(1, "x", "a", 0, 1), get(2, "x", None, 2, 3), get(3, "x", None, 4, 5)]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_a_cas_that_succeeded_twice_is_caught():
    ops = [put(1, "x", "a", 0, 1), cas(2, "x", "a", "b", True, 2, 4), cas(3, "x", "a", "c", True, 2, 4)]
    r = check_history(ops)
    assert r.verdict == NOT_LINEARIZABLE
    assert "cas('x', 'a' -> " in r.keys["x"].window


def test_concurrent_ops_can_be_ordered_either_way():
    # Two overlapping writes; readers afterwards agree on b, so a came first.
    ops = [put(1, "x", "a", 0, 10), put(2, "x", "b", 1, 9), get(3, "x", "b", 11, 12), get(1, "x", "b", 13, 14)]
    assert verdict(ops) == LINEARIZABLE
    # ... or on a, so b came first.
    ops = [put(1, "x", "a", 0, 10), put(2, "x", "b", 1, 9), get(3, "x", "a", 11, 12)]
    assert verdict(ops) == LINEARIZABLE
    # But not both, one after the other.
    ops = [put(1, "x", "a", 0, 10), put(2, "x", "b", 1, 9), get(3, "x", "a", 11, 12), get(3, "x", "b", 13, 14)]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_unknown_write_that_took_effect_is_accepted():
    # The put timed out, but its value shows up later (even much later).
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None, outcome="unknown"), get(3, "x", "a", 5, 6),
           get(3, "x", "b", 50, 51)]
    assert verdict(ops) == LINEARIZABLE


def test_unknown_write_that_did_not_take_effect_is_accepted():
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None, outcome="unknown"), get(3, "x", "a", 5, 6),
           get(3, "x", "a", 50, 51)]
    assert verdict(ops) == LINEARIZABLE


def test_unknown_write_cannot_take_effect_before_it_was_invoked():
    ops = [put(1, "x", "a", 0, 1), get(3, "x", "b", 2, 3), put(2, "x", "b", 5, None, outcome="unknown")]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_unknown_write_takes_effect_at_most_once():
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, None, outcome="unknown"), get(3, "x", "b", 5, 6),
           put(1, "x", "c", 7, 8), get(3, "x", "b", 9, 10)]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_unknown_delete_and_cas_may_take_effect():
    ops = [put(1, "x", "a", 0, 1), delete(2, "x", None, 2, None, outcome="unknown"), get(3, "x", None, 5, 6)]
    assert verdict(ops) == LINEARIZABLE
    ops = [put(1, "x", "a", 0, 1), cas(2, "x", "a", "b", None, 2, None, outcome="unknown"), get(3, "x", "b", 5, 6)]
    assert verdict(ops) == LINEARIZABLE
    # An unknown cas whose comparison fails cannot explain the value.
    ops = [put(1, "x", "a", 0, 1), cas(2, "x", "z", "b", None, 2, None, outcome="unknown"), get(3, "x", "b", 5, 6)]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_failed_ops_have_no_effect():
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, 3, outcome="fail"), get(3, "x", "a", 5, 6)]
    assert verdict(ops) == LINEARIZABLE
    ops = [put(1, "x", "a", 0, 1), put(2, "x", "b", 2, 3, outcome="fail"), get(3, "x", "b", 5, 6)]
    assert verdict(ops) == NOT_LINEARIZABLE


def test_delete_count_is_checked():
    assert verdict([delete(1, "x", 1, 0, 1)]) == NOT_LINEARIZABLE
    assert verdict([put(1, "x", "a", 0, 1), delete(1, "x", 0, 2, 3)]) == NOT_LINEARIZABLE
    assert verdict([put(1, "x", "a", 0, 1), delete(1, "x", None, 2, 3), get(1, "x", None, 4, 5)]) == LINEARIZABLE


def test_keys_are_checked_independently_and_reported_per_key():
    ops = [put(1, "x", "a", 0, 1), get(2, "x", "a", 2, 3),
           put(1, "y", "a", 0, 1), put(1, "y", "b", 2, 3), get(2, "y", "a", 4, 5)]
    r = check_history(ops)
    assert r.keys["x"].verdict == LINEARIZABLE
    assert r.keys["y"].verdict == NOT_LINEARIZABLE
    assert [v.key for v in r.failures()] == ["y"]
    assert "key 'y'" in r.report()


def test_failure_window_names_the_offending_ops():
    ops = [put(1, "x", f"v{i}", 2 * i, 2 * i + 1) for i in range(20)]
    ops.append(get(7, "x", "v3", 100, 101))
    r = check_history(ops)
    v = r.keys["x"]
    assert v.verdict == NOT_LINEARIZABLE
    assert v.linearized == 20  # every put fits; the read is the op that cannot
    assert "p7 get('x') -> 'v3'" in v.window
    assert "reads 'v3' but the value is" in v.window
    assert "put('x', 'v19')" in v.window  # the end of the longest prefix
    assert "put('x', 'v2')" not in v.window  # ... not the whole history
    assert any(op.process == 7 and op.kind == "get" for op in v.window_ops)


def test_dict_input_and_validation():
    r = check_history([{"process": 1, "kind": "put", "key": "x", "value": "a", "invoke": 0, "complete": 1,
                        "outcome": "ok"},
                       {"process": 2, "kind": "get", "key": "x", "invoke": 2, "complete": 3, "outcome": "ok",
                        "result": "a"}])
    assert r.ok
    with pytest.raises(ValueError):
        Op(1, "incr", "x")
    with pytest.raises(ValueError):
        Op(1, "get", "x", invoke=0, complete=None, outcome="ok")
    with pytest.raises(ValueError):
        Op(1, "get", "x", invoke=5, complete=1)


def test_budget_exhausted_is_a_verdict_not_a_hang():
    ops = _generate(random.Random(5), n=400, keys=1, p_unknown=0.3, overlap=20.0)
    ops.append(get("late", "k0", "never-written", 10_000, 10_001))
    t0 = time.monotonic()
    v = check_key("k0", ops, step_budget=2_000)
    assert time.monotonic() - t0 < 5
    assert v.verdict in (BUDGET_EXHAUSTED, NOT_LINEARIZABLE)
    if v.verdict == BUDGET_EXHAUSTED:
        assert "budget exhausted" in v.window and not check_history(ops, step_budget=2_000).ok


# -- generated histories --------------------------------------------------------------
def _generate(rng: random.Random, n: int, keys: int, p_unknown: float, overlap: float) -> list[Op]:
    """A history from a real sequential execution: op j takes effect at time j and
    its recorded interval is stretched around that point at random."""
    state: dict[str, str] = {}
    ops = []
    for j in range(n):
        t = float(j)
        key = f"k{rng.randrange(keys)}"
        kind = rng.choice(("put", "get", "get", "delete", "cas"))
        cur = state.get(key)
        unknown = kind != "get" and rng.random() < p_unknown
        applied = not unknown or rng.random() < 0.5
        d = dict(process=j % 8, kind=kind, key=key, invoke=t - rng.uniform(0, overlap),
                 complete=None if unknown else t + rng.uniform(0, overlap), outcome="unknown" if unknown else "ok")
        if kind == "put":
            d["value"] = f"v{j}"
            if applied:
                state[key] = f"v{j}"
        elif kind == "get":
            d["result"] = cur
        elif kind == "delete":
            d["result"] = None if unknown else (1 if cur is not None else 0)
            if applied:
                state.pop(key, None)
        else:
            old = cur if cur is not None and rng.random() < 0.6 else f"v{rng.randrange(max(1, j))}"
            d.update(old=old, new=f"v{j}", result=None if unknown else cur == old)
            if applied and cur == old:
                state[key] = f"v{j}"
        ops.append(Op(**d))
    return ops


@pytest.mark.parametrize("seed", range(12))
def test_generated_histories_pass_and_a_corrupted_read_fails(seed):
    rng = random.Random(seed)
    ops = _generate(rng, n=600, keys=3, p_unknown=0.05, overlap=rng.choice((0.5, 2.0, 4.0)))
    r = check_history(ops, time_budget=20)
    assert r.verdict == LINEARIZABLE, r.report()

    # Corrupt one read so it returns a value that was overwritten, in real time,
    # before the read began: put A, then put B (invoked after A completed), then
    # the read (invoked after B completed) returns A's value. Never linearizable.
    puts = [i for i, op in enumerate(ops) if op.kind == "put" and op.outcome == "ok"]
    reads = [i for i, op in enumerate(ops) if op.kind == "get"]
    rng.shuffle(reads)
    for ri in reads:
        g = ops[ri]
        before = [i for i in puts if ops[i].key == g.key and ops[i].complete < g.invoke]
        stale = [a for a in before if any(ops[b].invoke > ops[a].complete for b in before)]
        if stale:
            a = rng.choice(stale)
            break
    else:
        pytest.skip("no read to corrupt")
    bad = list(ops)
    bad[ri] = Op(g.process, "get", g.key, invoke=g.invoke, complete=g.complete, result=ops[a].value, id="BAD")
    r = check_history(bad, time_budget=20)
    assert r.verdict == NOT_LINEARIZABLE
    assert r.keys[g.key].verdict == NOT_LINEARIZABLE
    assert all(v.ok for k, v in r.keys.items() if k != g.key)


def test_a_read_of_a_never_written_value_fails():
    rng = random.Random(99)
    ops = _generate(rng, n=300, keys=2, p_unknown=0.05, overlap=2.0)
    i = next(i for i, op in enumerate(ops) if op.kind == "get")
    g = ops[i]
    ops[i] = Op(g.process, "get", g.key, invoke=g.invoke, complete=g.complete, result="bogus", id="BAD")
    r = check_history(ops)
    assert r.keys[g.key].verdict == NOT_LINEARIZABLE
    assert "#BAD" in r.keys[g.key].window


def test_thousands_of_ops_per_key_check_within_seconds():
    ops = _generate(random.Random(7), n=4000, keys=1, p_unknown=0.03, overlap=3.0)
    t0 = time.monotonic()
    r = check_history(ops, time_budget=30)
    assert r.verdict == LINEARIZABLE
    assert time.monotonic() - t0 < 5
