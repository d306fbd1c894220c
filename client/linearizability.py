"""A linearizability checker for histories of key-value register operations.

Theory of operation
-------------------
A history is a list of `Op`: who ran it (`process`), what it was (`kind`:
"put", "get", "delete" or "cas" on one `key`), when it was invoked and when
it completed, and its outcome:

- "ok": it took effect exactly once, somewhere between invocation and
  completion, and returned `result` (the value read for a get, None if the
  key was absent; True/False for a cas; the number of keys deleted, or None
  when not recorded, for a delete);
- "fail": it certainly had no effect (dropped before the search);
- "unknown": it may have taken effect at any point after its invocation (even
  after the history ends), or never; its completion time is taken as +inf.

The history is linearizable if there is one total order of the ok operations
and some of the unknown ones that respects real time (A before B whenever A
completed before B was invoked) and in which each operation returns what the
sequential model (a map from key to value) says it returns.

Keys are independent in this model, so each key's sub-history is checked on
its own (P-compositionality, as Porcupine does): the search is exponential
in the concurrency of one key, not of the whole history.

The search per key is Wing and Gong's: from the current model state, try to
linearize next each pending operation that was invoked before the earliest
completion among the ok operations not linearized yet (any later one would
break real-time order), recurse, and backtrack when none fits. The search
succeeds once every ok operation is linearized; unknown operations left over
are the ones that never took effect. Lowe's memoisation makes it practical:
a (set of linearized operations, model state) pair reached once need not be
explored again. The set is a bitset in a Python int; the search is an
iterative DFS over an explicit stack, so a long history cannot hit the
recursion limit.

Two reductions keep unknown operations from multiplying the search space,
both exact:
- Values that no get ever returned and no cas compares against are
  indistinguishable to the model, so they are all stored as one marker.
- Unknown operations with the same effect (all unknown deletes; unknown puts
  of unobserved values; ...) are interchangeable once invoked, because none has
  a deadline; only the earliest-invoked unused one of each kind is a
  candidate. An unknown operation that would not change the state (a delete
  of an absent key, a cas whose comparison fails) is never tried, since
  leaving it out is always at least as good.

When the search fails, the report shows where it got furthest: how many ok
operations it had linearized, the model state there, the last operations of
that prefix, and each candidate operation with why it could not go next.
A step and time budget bound the search; when exhausted the verdict is
"unknown (budget exhausted)", never a hang.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping, Sequence

import structlog

log = structlog.get_logger(__name__)

KINDS = ("put", "get", "delete", "cas")
OUTCOMES = ("ok", "fail", "unknown")

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not linearizable"
BUDGET_EXHAUSTED = "unknown (budget exhausted)"

_PUT, _GET, _DELETE, _CAS = range(4)
_KIND_CODE = {"put": _PUT, "get": _GET, "delete": _DELETE, "cas": _CAS}
_INF = math.inf


class _Unobserved:
    """The model's stand-in for any value no get returned and no cas compares against."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<a value no read observed>"


UNOBSERVED = _Unobserved()


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a history.

    Attributes:
        process: who ran it (any hashable; used in reports only).
        kind: "put", "get", "delete" or "cas".
        key: the key (any hashable, usually str).
        value: the value written by a put.
        old, new: a cas's expected and new value.
        invoke: invocation time (any clock shared by every process).
        complete: completion time; None (or +inf) when unknown.
        outcome: "ok", "fail" or "unknown".
        result: for an ok get the value read (None: absent); for an ok cas
            True/False; for an ok delete the count deleted (or None: not checked).
        id: an identifier for reports (default: position in the history).
    """

    process: Any
    kind: str
    key: Any
    value: Any = None
    old: Any = None
    new: Any = None
    invoke: float = 0.0
    complete: float | None = None
    outcome: str = "ok"
    result: Any = None
    id: Any = None

    def __post_init__(self) -> None:
        if self.kind not in _KIND_CODE:
            raise ValueError(f"op kind must be one of {KINDS}, got {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"op outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.outcome == "ok" and (self.complete is None or self.complete == _INF):
            raise ValueError(f"an ok op needs a completion time: {self!r}")
        if self.complete is not None and self.complete < self.invoke:
            raise ValueError(f"op completes before it is invoked: {self!r}")

    def describe(self) -> str:
        """One readable line: `#id p<process> put('k', 'v') -> ok [t0 .. t1]`."""
        if self.kind == "put":
            call = f"put({self.key!r}, {self.value!r})"
        elif self.kind == "get":
            call = f"get({self.key!r})"
        elif self.kind == "delete":
            call = f"delete({self.key!r})"
        else:
            call = f"cas({self.key!r}, {self.old!r} -> {self.new!r})"
        if self.outcome == "ok":
            out = "ok" if self.kind == "put" or (self.kind == "delete" and self.result is None) else repr(self.result)
        else:
            out = self.outcome
        end = "?" if self.complete is None or self.complete == _INF else f"{self.complete:.4f}"
        return f"#{self.id} p{self.process} {call} -> {out}  [{self.invoke:.4f} .. {end}]"

    def to_dict(self) -> dict:
        return {"process": self.process, "kind": self.kind, "key": self.key, "value": self.value, "old": self.old,
                "new": self.new, "invoke": self.invoke, "complete": self.complete, "outcome": self.outcome,
                "result": self.result, "id": self.id}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Op":
        return cls(**{k: d[k] for k in ("process", "kind", "key", "value", "old", "new", "invoke", "complete",
                                         "outcome", "result", "id") if k in d})


@dataclass
class KeyVerdict:
    """The verdict on one key's sub-history.

    Attributes:
        key: the key.
        verdict: LINEARIZABLE, NOT_LINEARIZABLE or BUDGET_EXHAUSTED.
        ops: operations checked (ok and unknown; failed ones are dropped).
        steps: search states explored.
        seconds: time spent.
        linearized: on failure, ok operations in the longest prefix found.
        window: on failure, the readable report of where the search got stuck.
        window_ops: on failure, the operations named in that report.
    """

    key: Any
    verdict: str
    ops: int
    steps: int = 0
    seconds: float = 0.0
    linearized: int = 0
    window: str = ""
    window_ops: list[Op] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.verdict == LINEARIZABLE


@dataclass
class CheckResult:
    """The verdict on a whole history.

    `ok` is True only when every key is proven linearizable. `verdict` is
    NOT_LINEARIZABLE if any key is, else BUDGET_EXHAUSTED if any key ran out
    of budget, else LINEARIZABLE.
    """

    ok: bool
    verdict: str
    keys: dict[Any, KeyVerdict]
    ops: int
    seconds: float

    def failures(self) -> list[KeyVerdict]:
        return [v for v in self.keys.values() if not v.ok]

    def report(self) -> str:
        """A readable multi-line report (the stuck windows of failing keys included)."""
        lines = [f"{self.verdict}: {len(self.keys)} keys, {self.ops} ops, {self.seconds:.2f} s"]
        for v in self.keys.values():
            lines.append(f"  key {v.key!r}: {v.verdict} ({v.ops} ops, {v.steps} steps, {v.seconds:.2f} s)")
        for v in self.failures():
            if v.window:
                lines.append(v.window)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.report()


def check_history(history: Iterable[Op | Mapping[str, Any]], *, time_budget: float = 30.0,
                  step_budget: int | None = None, window: int = 6) -> CheckResult:
    """Check a key-value history for linearizability, key by key.

    Args:
        history: `Op`s (or their dicts), in any order.
        time_budget: seconds for the whole check; a key still undecided when
            its share runs out gets BUDGET_EXHAUSTED.
        step_budget: search states per key (None: unlimited).
        window: how many linearized ops to show before the stuck point.
    Returns:
        A `CheckResult`.
    Raises:
        ValueError: a malformed op.
    """
    t0 = time.monotonic()
    ops = [op if isinstance(op, Op) else Op.from_dict(op) for op in history]
    by_key: dict[Any, list[Op]] = {}
    for i, op in enumerate(ops):
        if op.id is None:
            op = Op(op.process, op.kind, op.key, op.value, op.old, op.new, op.invoke, op.complete, op.outcome,
                    op.result, i)
        by_key.setdefault(op.key, []).append(op)
    verdicts: dict[Any, KeyVerdict] = {}
    keys = sorted(by_key, key=repr)
    deadline = t0 + time_budget
    for n, key in enumerate(keys):
        # A key's share: what is left, split over the keys still to check.
        share = max(0.0, (deadline - time.monotonic()) / (len(keys) - n))
        verdicts[key] = check_key(key, by_key[key], time_budget=share, step_budget=step_budget, window=window)
    if any(v.verdict == NOT_LINEARIZABLE for v in verdicts.values()):
        verdict = NOT_LINEARIZABLE
    elif any(v.verdict == BUDGET_EXHAUSTED for v in verdicts.values()):
        verdict = BUDGET_EXHAUSTED
    else:
        verdict = LINEARIZABLE
    result = CheckResult(verdict == LINEARIZABLE, verdict, verdicts, len(ops), time.monotonic() - t0)
    log.info("linearizability.checked", verdict=verdict, keys=len(keys), ops=len(ops),
             seconds=round(result.seconds, 3))
    return result


def check_key(key: Any, ops: Sequence[Op], *, time_budget: float = 30.0, step_budget: int | None = None,
              window: int = 6) -> KeyVerdict:
    """Check the sub-history of one key (every op must be on `key`). See `check_history`."""
    return _KeySearch(key, ops, window).run(time_budget, step_budget)


class _KeySearch:
    """The Wing-Gong-Lowe search over one key's operations."""

    def __init__(self, key: Any, ops: Sequence[Op], window: int) -> None:
        self.key = key
        self.window = window
        kept = [op for op in ops if op.outcome != "fail" and not (op.outcome == "unknown" and op.kind == "get")]
        for op in kept:
            if op.key != key:
                raise ValueError(f"op {op.describe()} is not on key {key!r}")
        # Index = rank by invocation time, so bit i is the i-th invoked op.
        kept.sort(key=lambda o: (o.invoke, _INF if o.complete is None else o.complete))
        self.ops = [op if op.id is not None else replace(op, id=f"{key}:{i}") for i, op in enumerate(kept)]
        kept = self.ops
        observed = {op.result for op in kept if op.kind == "get" and op.outcome == "ok" and op.result is not None}
        observed.update(op.old for op in kept if op.kind == "cas")

        def canon(v: Any) -> Any:
            return v if v is None or v in observed else UNOBSERVED

        n = len(kept)
        self.inv = [op.invoke for op in kept]
        self.ret = [_INF if op.outcome != "ok" else op.complete for op in kept]
        self.code = [_KIND_CODE[op.kind] for op in kept]
        self.arg = [canon(op.value) if op.kind == "put" else op.old for op in kept]
        self.arg2 = [canon(op.new) for op in kept]
        self.res = [op.result for op in kept]
        self.known = [op.outcome == "ok" for op in kept]
        self.promoted = self._promote_observed_writes()
        # ok ops that leave the state unchanged wherever they fit
        self.pure = [self.known[i] and (self.code[i] == _GET or (self.code[i] == _CAS and not self.res[i])
                                        or (self.code[i] == _DELETE and self.res[i] == 0)) for i in range(n)]
        self.ok_inv = [i for i in range(n) if self.known[i]]  # ok ops by invocation
        self.ok_ret = sorted(self.ok_inv, key=lambda i: self.ret[i])  # ok ops by completion
        self.unk = [i for i in range(n) if not self.known[i]]  # unknown ops by invocation
        # Unknown ops with the same effect are interchangeable: one class id each.
        classes: dict[tuple, int] = {}
        self.klass = [classes.setdefault((self.code[i], self.arg[i], self.arg2[i]), len(classes))
                      if not self.known[i] else -1 for i in range(n)]
        self.bit = [1 << i for i in range(n)]

    def _promote_observed_writes(self) -> set[int]:
        """Make unknown writes whose value was read mandatory, with a deadline.

        Values are unique per write, so if an ok get returned v (or an ok cas
        succeeded comparing against v) and v's only writer is an unknown op,
        that op did take effect, before that reader was linearized and so
        before the reader completed: it is searched like an ok op that
        completed then (a cas like one that returned True). Exact, and it
        turns most unknown writes into ordinary ones.
        """
        writers: dict[Any, list[int]] = {}
        for i, code in enumerate(self.code):
            if code == _PUT:
                writers.setdefault(self.arg[i], []).append(i)
            elif code == _CAS:
                writers.setdefault(self.arg2[i], []).append(i)
        deadline: dict[Any, float] = {}
        for i, code in enumerate(self.code):
            if not self.known[i]:
                continue
            if code == _GET and self.res[i] is not None:
                v = self.res[i]
            elif code == _CAS and self.res[i]:
                v = self.arg[i]
            else:
                continue
            deadline[v] = min(deadline.get(v, _INF), self.ret[i])
        promoted = set()
        for v, when in deadline.items():
            w = writers.get(v, ())
            if v is UNOBSERVED or len(w) != 1 or self.known[w[0]]:
                continue
            i = w[0]
            self.known[i] = True
            self.ret[i] = when
            if self.code[i] == _CAS:
                self.res[i] = True
            promoted.add(i)
        return promoted

    def _step(self, i: int, state: Any) -> tuple[bool, Any]:
        """Apply op i to `state`: (whether its recorded result fits, the new state)."""
        code = self.code[i]
        if code == _PUT:
            return True, self.arg[i]
        if code == _GET:
            return self.res[i] == state, state
        if code == _DELETE:
            r = self.res[i]
            if self.known[i] and r is not None and r != (0 if state is None else 1):
                return False, None
            return True, None
        # cas
        hit = state is not None and state == self.arg[i]
        if self.known[i] and bool(self.res[i]) != hit:
            return False, state
        return True, self.arg2[i] if hit else state

    def run(self, time_budget: float, step_budget: int | None) -> KeyVerdict:
        t0 = time.monotonic()
        deadline = t0 + time_budget
        max_steps = step_budget if step_budget is not None else -1
        inv, ret, bit, klass = self.inv, self.ret, self.bit, self.klass
        ok_inv, ok_ret, unk = self.ok_inv, self.ok_ret, self.unk
        n_ok, n_ok_inv = len(ok_ret), len(ok_inv)
        step = self._step
        code, res, arg = self.code, self.res, self.arg
        pure = self.pure
        n_ops = len(self.ops)
        # A stack entry: (mask, state, depth, lo_ret, lo_inv, path). depth = ok ops
        # linearized; lo_ret / lo_inv: every ok op before these positions of ok_ret /
        # ok_inv is linearized; path: (op, parent path) cons cells, for reports.
        stack: list[tuple] = [(0, None, 0, 0, 0, None)]
        visited = {(0, None)}
        best = stack[0]
        steps = 0
        while stack:
            entry = stack.pop()
            mask, state, depth, lo_ret, lo_inv, path = entry
            steps += 1
            if steps & 1023 == 0:
                if time.monotonic() > deadline or (max_steps >= 0 and steps > max_steps):
                    return self._verdict(BUDGET_EXHAUSTED, steps, t0, best)
            while lo_ret < n_ok and mask & bit[ok_ret[lo_ret]]:
                lo_ret += 1
            if lo_ret == n_ok:
                return KeyVerdict(self.key, LINEARIZABLE, n_ops, steps, time.monotonic() - t0, depth)
            if depth > best[2]:
                best = entry
            bound = ret[ok_ret[lo_ret]]
            while mask & bit[ok_inv[lo_inv]]:
                lo_inv += 1
            # Children are ranked, then pushed worst first so the best is popped
            # first: an op producing a value that a pending read or cas wants
            # (usually an unknown write that did take effect), then ok ops by
            # earliest completion, then unknown ops. Ranking only orders the
            # search; it never prunes it.
            children = []
            wanted = set()
            forced = -1
            j = lo_inv
            while j < n_ok_inv:
                i = ok_inv[j]
                if inv[i] > bound:
                    break
                if not mask & bit[i]:
                    fits, new = step(i, state)
                    if fits and pure[i]:
                        # An ok op that never changes the state (a read, a failed
                        # cas, a delete of nothing) and fits here can go first in
                        # any order that works from here: take it now, no branching.
                        forced = i
                        break
                    if fits:
                        children.append([1, ret[i], i, new, 1])
                    elif code[i] == _GET:
                        wanted.add(res[i])
                    elif code[i] == _CAS and res[i]:
                        wanted.add(arg[i])
                j += 1
            if forced >= 0:
                m = mask | bit[forced]
                if (m, state) not in visited:
                    visited.add((m, state))
                    stack.append((m, state, depth + 1, lo_ret, lo_inv, (forced, path)))
                continue
            seen = set()
            for i in unk:
                if inv[i] > bound:
                    break
                if mask & bit[i] or klass[i] in seen:
                    continue
                seen.add(klass[i])
                _, new = step(i, state)
                if new is state or new == state:
                    continue  # no effect: leaving it out is at least as good
                children.append([2, inv[i], i, new, 0])
            if wanted:
                for c in children:
                    if c[4] == 0 and c[3] in wanted:
                        c[0] = 0
            children.sort(reverse=True)
            for _, _, i, new, inc in children:
                m = mask | bit[i]
                if (m, new) not in visited:
                    visited.add((m, new))
                    stack.append((m, new, depth + inc, lo_ret, lo_inv, (i, path)))
        return self._verdict(NOT_LINEARIZABLE, steps, t0, best)

    # -- reporting ---------------------------------------------------------
    def _verdict(self, verdict: str, steps: int, t0: float, best: tuple) -> KeyVerdict:
        window, named = self._window(best)
        if verdict == BUDGET_EXHAUSTED:
            window = (f"key {self.key!r}: search budget exhausted after {steps} steps; furthest point reached:\n"
                      + window)
        v = KeyVerdict(self.key, verdict, len(self.ops), steps, time.monotonic() - t0, best[2], window, named)
        log.info("linearizability.key", key=self.key, verdict=verdict, steps=steps, linearized=best[2])
        return v

    def _window(self, best: tuple) -> tuple[str, list[Op]]:
        """Describe the deepest point: the tail of its prefix and why no candidate fits."""
        mask, state, depth, lo_ret, _, path = best
        order = []
        while path is not None:
            order.append(path[0])
            path = path[1]
        order.reverse()
        while lo_ret < len(self.ok_ret) and mask & self.bit[self.ok_ret[lo_ret]]:
            lo_ret += 1
        blocking = self.ok_ret[lo_ret] if lo_ret < len(self.ok_ret) else None
        bound = self.ret[blocking] if blocking is not None else _INF
        candidates = [i for i in range(len(self.ops)) if not mask & self.bit[i] and self.inv[i] <= bound]
        tail = order[-self.window:]
        lines = [f"key {self.key!r}: cannot linearize. Longest linearizable prefix: {depth} of "
                 f"{len(self.ok_ret)} ok ops ({len(order)} ops incl. unknown ones that took effect); "
                 f"state after it: {state!r}"]
        if len(order) > len(tail):
            lines.append(f"  ... {len(order) - len(tail)} earlier ops")
        for i in tail:
            lines.append(f"  linearized  {self._describe(i)}")
        if blocking is not None:
            lines.append(f"  must come next (completes first): {self._describe(blocking)}")
        lines.append("  none of these can go next:")
        for i in candidates[:self.window * 2]:
            lines.append(f"  candidate   {self._describe(i)}   <- {self._why(i, state)}")
        if len(candidates) > self.window * 2:
            lines.append(f"  ... and {len(candidates) - self.window * 2} more candidates")
        named = [self.ops[i] for i in tail] + [self.ops[i] for i in candidates[:self.window * 2]]
        return "\n".join(lines), named

    def _describe(self, i: int) -> str:
        text = self.ops[i].describe()
        if i in self.promoted:
            text += f"  (took effect: its value was read by {self.ret[i]:.4f})"
        return text

    def _why(self, i: int, state: Any) -> str:
        fits, new = self._step(i, state)
        if not self.known[i]:
            return "unknown: tried both taking effect here and not"
        if not fits:
            code = self.code[i]
            if code == _GET:
                return f"reads {self.res[i]!r} but the value is {state!r}"
            if code == _CAS:
                return f"returned {self.res[i]!r} but the value is {state!r}"
            if code == _DELETE:
                return f"deleted {self.res[i]!r} keys but the value is {state!r}"
        return f"fits here (value becomes {new!r}) but nothing after it does"
