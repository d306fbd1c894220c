"""Run work on exactly one of a group of Ray actors: the elected one.

    @ray.remote
    class Worker(LeaderElected):
        def __init__(self, cluster):
            self.join_election(cluster, "reports")

        @leader_only
        def run_report(self): ...          # raises NotElectionLeader elsewhere

Every actor of the group campaigns in the same election from a background
thread. The winner's `is_leader()` turns true; if its process dies, its
session lease stops being renewed and the next campaigner takes over within
the TTL. A leader that loses its lease (partitioned, paused) stops calling
itself leader by its own clock before the cluster can elect another, and the
election's `revision` is a fencing token for anything it writes meanwhile.
"""

from __future__ import annotations

import functools
import inspect
import threading
from typing import Any, Callable, TypeVar

import structlog

from kv.errors import ClientClosed, NotElectionLeader, RaftKVError

__all__ = ["LeaderElected", "leader_only"]

log = structlog.get_logger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class LeaderElected:
    """Mixin for Ray actor classes (also works in plain objects)."""

    _election_state: "_ElectionThread | None" = None

    def join_election(self, cluster: str, election: str, *, value: Any = None, ttl: float = 5.0,
                      namespace: str | None = None) -> None:
        """Start campaigning in `election` on raftkv cluster `cluster`.

        Args:
            value: what the leader announces (default: this Ray actor's name,
                or its id if unnamed, so `ray.get_actor(value)` finds a named leader).
            ttl: session lease TTL: how long a dead leader can hold on.
        """
        if self._election_state is not None:
            raise RuntimeError("this actor already joined an election; leave_election() first")
        if value is None:
            value = _actor_label()
        self._election_state = _ElectionThread(cluster, election, value, ttl, namespace)

    def is_leader(self) -> bool:
        """True while this actor leads (by its own, conservative, clock)."""
        st = self._election_state
        return st is not None and st.leading()

    def wait_for_leadership(self, timeout: float | None = None) -> bool:
        st = self._election_state
        return st is not None and st.elected.wait(timeout)

    def election_token(self) -> int | None:
        """The fencing token of the current leadership (its create revision), or None."""
        st = self._election_state
        return st.token if st is not None and st.leading() else None

    def leader_fence(self) -> Any:
        """The txn Compare "this actor still leads", for fenced writes:
        `client.txn().if_(self.leader_fence()).then(...)`.

        Raises:
            NotElectionLeader: not leading now.
        """
        st = self._election_state
        e = st.current if st is not None and st.leading() else None
        if e is None:
            raise NotElectionLeader("this actor does not lead its election")
        return e.fence()

    def leave_election(self) -> None:
        """Resign (if leading) and stop campaigning."""
        st, self._election_state = self._election_state, None
        if st is not None:
            st.stop()


def leader_only(method: F) -> F:
    """Make a LeaderElected method run only on the current leader; elsewhere
    it raises NotElectionLeader (sync and async methods)."""

    def check(self: LeaderElected) -> None:
        if not self.is_leader():
            raise NotElectionLeader(f"{type(self).__name__}.{method.__name__} runs only on the elected leader")

    if inspect.iscoroutinefunction(method):
        @functools.wraps(method)
        async def awrapper(self: LeaderElected, *args: Any, **kwargs: Any) -> Any:
            check(self)
            return await method(self, *args, **kwargs)

        return awrapper  # type: ignore[return-value]

    @functools.wraps(method)
    def wrapper(self: LeaderElected, *args: Any, **kwargs: Any) -> Any:
        check(self)
        return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class _ElectionThread:
    """Campaigns, leads until the session is lost, campaigns again."""

    def __init__(self, cluster: str, election: str, value: Any, ttl: float, namespace: str | None) -> None:
        self.cluster, self.election, self.value, self.ttl, self.namespace = cluster, election, value, ttl, namespace
        self.elected = threading.Event()
        self.token: int | None = None
        self.current: Any = None  # the Election while leading
        self._stopped = threading.Event()
        self._session: Any = None
        self._client: Any = None
        self._thread = threading.Thread(target=self._run, name=f"raftkv-election-{election}", daemon=True)
        self._thread.start()

    def leading(self) -> bool:
        s = self._session
        return self.elected.is_set() and s is not None and not s.lost

    def stop(self) -> None:
        self._stopped.set()
        session = self._session
        if session is not None:
            session.close()  # revokes: our key goes, the next campaigner leads
        self._thread.join(timeout=10)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        from client.client import connect
        from raft_actors.cluster import DEFAULT_NAMESPACE

        try:
            self._client = connect(self.cluster, namespace=self.namespace or DEFAULT_NAMESPACE)
        except RaftKVError:
            log.exception("election.connect_failed", cluster=self.cluster, election=self.election)
            return
        while not self._stopped.is_set():
            try:
                self._session = self._client.session(self.ttl)
                e = self._client.election(self.election, session=self._session)
                e.campaign(self.value)
                self.token = e.revision
                self.current = e
                self.elected.set()
                log.info("election.won", election=self.election, token=self.token)
                self._session.wait_lost()
            except ClientClosed:
                return
            except RaftKVError as exc:
                log.info("election.retry", election=self.election, error=str(exc))
                self._stopped.wait(0.5)
            finally:
                self.elected.clear()
                self.token = None
                self.current = None
                if self._session is not None:
                    self._session.close()


def _actor_label() -> str:
    try:
        import ray

        ctx = ray.get_runtime_context()
        name = ctx.get_actor_name()
        return name if name else (ctx.get_actor_id() or "driver")
    except Exception:
        return "unknown"
