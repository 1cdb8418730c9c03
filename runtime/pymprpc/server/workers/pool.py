"""`ProcessPool`: the server's worker processes, driven from its event loop.

Each worker is connected by a socketpair that the event loop reads and writes directly
(`add_reader` / `add_writer`, no helper threads). A call is one frame each way; a worker
takes up to `PIPELINE` calls at a time (the next ones are already in its socket when it
finishes one), the rest wait in one queue and go to the least-loaded worker as results
come back. Frames queued for a worker within one loop pass leave in one `sendmsg`.

Workers run calls in order and answer each before starting the next, so when a worker
dies the server knows which call it was running: that call fails with 404 naming the
method, the worker is replaced, and the calls queued behind it go to other workers. A
cancelled or timed-out call's worker is killed and replaced the same way once that call
is the one it runs; the calls behind it are not lost.

A worker is asked of the zygote without waiting for it: its pid comes back on the
zygote's socket, read by the event loop, and the worker takes calls from then on. A
zygote that does not answer within `SPAWN_TIMEOUT`, or exits, is killed and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import multiprocessing
import os
import pickle
import select
import signal
import socket
import tempfile
import threading
import time
import weakref
from collections import deque
from typing import Any, Final

from ...context import CallContext, CallSource
from ...errors import RPCRuntimeError, exception_text, type_name
from ..eager import ResultSetter
from . import framing
from .child import CANCELLED, PID, STARTED, UPDATE_LENGTH, run_zygote
from .framing import PICKLE
from .targets import TargetTable

# Calls sent to one worker ahead of its results: many while its calls are short, so
# frames travel in batches and the worker never waits for the server; none while they
# are slow, or while the call it runs has already taken longer than a short one, so a
# call waits behind a slow one only if it was sent before that call turned slow.
log = logging.getLogger("pymprpc.server")

PIPELINE: Final = 32
SHORT_CALL: Final = 0.0005  # seconds; a worker whose calls average more is "slow"
_SMOOTHING: Final = 0.2  # weight of the latest call in a worker's average
_SOCKET_BUFFER: Final = 4 * 1024 * 1024  # asked for; the kernel may cap it lower
_IOV_MAX: Final = 512  # buffers per sendmsg
_THREAD_EXIT_WAIT: Final = 0.25  # seconds a joined thread may take to be gone
_STOP_TIMEOUT: Final = 5.0  # seconds to wait for a killed process to be gone
# Seconds a zygote may take to answer a request for a worker (it forks and replies at
# once; only a stopped or thrashing zygote is slower). Past it the zygote is killed and a
# new one asked; if that one does not answer either, calls waiting for a worker fail.
SPAWN_TIMEOUT = 5.0
# Seconds a worker whose calls arrive back to back polls for the next one before it
# sleeps (child.Waiter): longer than a sequential client's round trip through the server.
DEFAULT_SPIN: Final = 0.0003

# Read for every call (a global lookup, not a module attribute).
_ASK: Final = framing.ASK
_BUFFER: Final = framing.BUFFER
_CALL: Final = framing.CALL
_CONTEXT: Final = framing.CONTEXT
_OK: Final = framing.OK
_args_out_of_band: Final = framing.args_out_of_band
_encode: Final = framing.encode
_monotonic: Final = time.monotonic
_loads: Final = pickle.loads
# A call's future and the outcome (kind, value) it is to be set to.
_Settled = tuple["asyncio.Future[Any]", Any]


class RemoteFunctionError(Exception):
    """A function raised inside a worker (or a thread); carries its type name and traceback."""

    def __init__(
        self,
        type_name: str,
        message: str,
        frame: str,
        unsent_type: str | None = None,
        refusal: str | None = None,
        coded: tuple[str, str, str | None, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.frame = frame
        # A coded pymprpc.errors exception the function raised (see child._coded).
        self.coded = coded
        # For a result the worker could not send back: its type's name (the server tells a
        # typed method's caller that it is not of the declared type), and, if it was too
        # deep to pickle, why a connection would refuse it too (or None).
        self.unsent_type = unsent_type
        self.refusal = refusal


def default_size() -> int:
    """Workers by default: the CPUs this process may use (its CPU affinity, as `taskset`
    or a container's cpuset sets it, where the OS has one)."""
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+
    if count is not None:
        return max(1, count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def single_threaded(settle: float = 0.0) -> bool:
    """Whether this process runs one thread only (so fork cannot copy a held lock).

    Counts OS threads, as Python 3.12's fork warning does: a thread that was joined may
    still be exiting. With `settle`, wait up to that many seconds for such threads
    when Python itself knows of no other thread.
    """
    if threading.active_count() > 1:
        return False
    end = time.monotonic() + settle
    while True:
        try:
            if len(os.listdir("/proc/self/task")) == 1:
                return True
        except OSError:
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(0.001)


def importing_main_for_a_child() -> bool:
    """Whether this process is one multiprocessing started by spawn or forkserver, still
    importing its parent's main module (as the pool's forkserver-started zygote does).

    Reads multiprocessing's private `_inheriting` flag, the one its own "bootstrapping
    phase" error reads (`tests/e2e/test_process_pool_spawn.py` checks it on 3.11-3.13);
    False where it is missing.
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


_MAIN_GUARD_HINT: Final = (
    "it was started by multiprocessing's forkserver (threads were running), which imports "
    "the main module afresh: put the code that starts the server under "
    '`if __name__ == "__main__":` (README, "Forking safely")'
)


class _Call:
    __slots__ = ("context", "end", "future", "id", "name", "payload", "size", "worker")

    def __init__(
        self,
        id: int,
        name: str,
        payload: list[bytes | memoryview],
        future: asyncio.Future[Any],
        context: CallContext | CallSource | None,
    ) -> None:
        self.id = id
        self.name = name
        self.payload = payload
        self.future = future
        self.context = context  # sent to the worker when it asks (framing.ASK)
        self.worker: _Worker | None = None
        self.size = len(payload[0]) if len(payload) == 1 else framing.total(payload)
        self.end = 0  # bytes written to its worker once this call is written in full


class _Request:
    """A worker asked of a zygote, not yet answered: the server's end of its socket
    (None once abandoned: the worker, if forked, reads end of file and exits), the
    server's view of its `STARTED` word, and the target version the zygote had when it
    received the request."""

    __slots__ = ("sock", "started", "version")

    def __init__(self, sock: socket.socket | None, started: mmap.mmap, version: int) -> None:
        self.sock = sock
        self.started = started
        self.version = version


def _shared_word() -> tuple[int, mmap.mmap]:
    """A file holding one `STARTED` word, and the server's mapping of it (shared: what a
    worker mapping the same file writes, the server reads)."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("pymprpc-worker", os.MFD_CLOEXEC)
    else:  # no memfd (not Linux): an unlinked temporary file
        with tempfile.TemporaryFile() as file:
            fd = os.dup(file.fileno())
    try:
        os.ftruncate(fd, STARTED.size)
        return fd, mmap.mmap(fd, STARTED.size)
    except BaseException:
        os.close(fd)
        raise


class _Zygote:
    """A process holding the target table that forks workers on request.

    Forked from the server while it has one thread, it inherits every target, even
    functions defined inside `with Server(...)`. Once the server runs threads, forking it
    is unsafe (a copied lock may be held forever; Python 3.12+ warns), so a zygote is
    then started by multiprocessing's forkserver, a fresh interpreter, and receives the
    targets pickled: functions by their importable name, instances by value. Only when a
    target cannot be pickled that way does the server fork with threads running (and
    says so once in the log).

    Workers are asked for without waiting (`request`); the zygote answers each request
    with the new worker's pid, in request order, read by `replies` when its socket is
    readable (the pool reads it from the event loop, so a stalled zygote stalls no call).
    """

    def __init__(self, targets: dict[str, Any], version: int, spin: float = 0.0) -> None:
        self.version = version
        self.spin = spin
        self.workers = 0  # live workers forked by this zygote
        self.retired = False
        self.replacement = False  # made because the previous zygote failed
        self.proven = False  # has answered a request
        self.waiting: deque[_Request] = deque()  # requests sent, in order, not answered
        self.expected = 0  # requests in `waiting` not abandoned
        self.progress = 0.0  # when it last answered (or was asked while idle)
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None  # reading its replies
        self._reply = bytearray()
        self._reaped = False
        self._process: Any = None  # multiprocessing.Process when started by the forkserver
        # Closes it if its pool is dropped without shutdown; detached once it is shut (a
        # finalizer holds the zygote for as long as its pool lives: one per restart).
        self.finalizer: weakref.finalize[Any, Any] | None = None
        self.pid = 0
        parent, child = socket.socketpair()
        try:
            if single_threaded() or not self._start_by_forkserver(child, targets):
                self.pid = _fork_zygote(parent, child, targets, spin)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        self.ctl = parent

    def _start_by_forkserver(self, child: socket.socket, targets: dict[str, Any]) -> bool:
        try:
            pickle.dumps(targets)
        except Exception as exc:  # noqa: BLE001 - anything unpicklable: fall back to fork
            log.warning(
                "forking the worker processes although threads are running (%s cannot be "
                "sent to a fresh process: %s); register process-pool functions before "
                "starting threads, or define them at module level",
                ", ".join(sorted(_unpicklable(targets))) or "a target",
                exc,
            )
            return False
        context = multiprocessing.get_context("forkserver")
        process = context.Process(
            target=run_zygote, args=(child, targets, self.spin), name="pymprpc-zygote", daemon=False
        )
        process.start()
        self._process = process
        self.pid = process.pid or 0
        return True

    @property
    def by_forkserver(self) -> bool:
        """Whether multiprocessing's forkserver started it (not a fork of the server)."""
        return self._process is not None

    def request(self) -> None:
        """Ask for a new worker (answered later, see `replies`); OSError if the zygote
        is gone. Never blocks: the request is one byte and a file descriptor."""
        ours, theirs = socket.socketpair()
        for sock in (ours, theirs):
            # Room for a large frame in one write: fewer wake-ups of each side per frame.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
        fd = -1
        try:
            # Which call the worker started last: how the server tells, when the worker
            # dies with several calls sent to it, whether the first of them was running.
            fd, started = _shared_word()
            socket.send_fds(self.ctl, [b"w"], [theirs.fileno(), fd], socket.MSG_DONTWAIT)
        except BaseException:
            ours.close()
            raise
        finally:
            # The zygote holds its own copy now (or never will): ours must not keep the
            # worker's end open, or the server could not see the worker's end of file.
            theirs.close()
            if fd >= 0:
                os.close(fd)
        if not self.waiting:
            self.progress = time.monotonic()
        self.waiting.append(_Request(ours, started, self.version))
        self.expected += 1

    def replies(self) -> list[tuple[socket.socket, int, mmap.mmap, int]] | None:
        """The workers answered so far, without blocking: (socket, pid, `STARTED` word,
        version the request was sent at) each, abandoned ones left out; None if the
        zygote is gone (end of file, or an error on its socket)."""
        try:
            data = self.ctl.recv(1 << 12, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not data:
            return None
        reply = self._reply
        reply += data
        out = []
        size = PID.size
        while len(reply) >= size and self.waiting:
            pid = PID.unpack_from(reply)[0]
            del reply[:size]
            request = self.waiting.popleft()
            if request.sock is not None:
                self.expected -= 1
                out.append((request.sock, pid, request.started, request.version))
            self.progress = time.monotonic()
            self.proven = True
        return out

    def abandon(self) -> None:
        """Give up the requests not answered yet (their workers exit on end of file)."""
        for request in self.waiting:
            if request.sock is not None:
                request.sock.close()
                request.sock = None
                request.started.close()
        self.expected = 0

    def update(self, body: bytes) -> None:
        """Add the pickled targets in `body` to the zygote's table (for later workers)."""
        self.ctl.sendall(b"t" + UPDATE_LENGTH.pack(len(body)) + body)

    def kill(self) -> None:
        """SIGKILL the zygote (it stalled or failed); its workers live on."""
        with contextlib.suppress(OSError, ValueError):
            if self._process is not None:
                self._process.kill()
            elif self.pid:
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop the zygote and reap it (its workers are reaped by the kernel); idempotent."""
        self.shut()
        self.reap()

    def shut(self) -> None:
        """Tell the zygote to exit, without waiting for it (see `reap`); idempotent. One
        with requests not answered may be stalled: it is killed."""
        if self.ctl.fileno() == -1:
            return
        if self.finalizer is not None:
            self.finalizer.detach()
            self.finalizer = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        loop, self.loop = self.loop, None
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.ctl.fileno())
        if self.waiting:
            self.abandon()
            self.waiting.clear()
            self.kill()
        self.ctl.close()

    def reap(self, block: bool = True) -> bool:
        """Whether the shut zygote's process is gone and reaped: waits for it (killing
        it after `_STOP_TIMEOUT`) if `block`, else only looks."""
        if self._reaped:
            return True
        process = self._process
        if process is not None:
            if block:
                process.join(_STOP_TIMEOUT)
                if process.is_alive():
                    process.kill()
                    process.join()
            elif process.exitcode is None:
                return False
            process.close()
        elif block:
            _reap(self.pid)
        else:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done = self.pid
            if not done:
                return False
        self._reaped = True
        return True


def _fork_zygote(
    parent: socket.socket, child: socket.socket, targets: dict[str, Any], spin: float
) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            parent.close()
            run_zygote(child, targets, spin)
        finally:
            os._exit(0)
    return pid


def _unpicklable(targets: dict[str, Any]) -> list[str]:
    names = []
    for key, target in targets.items():
        try:
            pickle.dumps(target)
        except Exception:  # noqa: BLE001 - any failure means "cannot be sent"
            names.append(key.split(":", 1)[-1])
    return names


def _reap(pid: int) -> None:
    """Wait for child `pid` to exit (SIGKILL it after `_STOP_TIMEOUT`) and reap it."""
    try:
        # Woken the moment it exits (polling would add a millisecond or more per reap).
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        end = time.monotonic() + _STOP_TIMEOUT
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return
            if done:
                return
            if time.monotonic() > end:
                os.kill(pid, signal.SIGKILL)
                end = float("inf")
            if pidfd >= 0:
                with contextlib.suppress(InterruptedError):
                    select.select([pidfd], [], [], max(0.0, min(end - time.monotonic(), 1.0)))
            else:
                time.sleep(0.001)
    finally:
        if pidfd >= 0:
            os.close(pidfd)


class _Worker:
    __slots__ = (
        "buffers",
        "busy_since",
        "cost",
        "dead",
        "delivered",
        "draining",
        "fd",
        "inflight",
        "limit",
        "out",
        "pid",
        "pidfd",
        "queued",
        "reader",
        "sock",
        "started",
        "stopped",
        "write_scheduled",
        "writing",
        "zygote",
    )

    def __init__(self, sock: socket.socket, pid: int, started: mmap.mmap, zygote: _Zygote) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.started = started  # the number of the call it started last (0: none)
        self.zygote = zygote
        try:
            # A pidfd keeps naming this process even after its pid is reused.
            self.pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.reader = framing.FrameReader(framing.FROM_WORKER)
        self.buffers: list[bytearray | bytes] = []  # out-of-band values of the next result
        self.inflight: dict[int, _Call] = {}  # in the order the worker runs them
        self.cost = 0.0  # smoothed seconds per call
        self.limit = PIPELINE  # calls it may have in flight (1 while its calls are slow)
        self.busy_since = 0.0  # when it finished its previous call (or got this one)
        self.out: list[bytes | memoryview] = []
        self.queued = 0  # bytes ever queued for the worker
        self.delivered = 0  # bytes the kernel accepted: calls up to here may have run
        self.write_scheduled = False
        self.writing = False  # waiting for the socket to accept more
        self.dead = False  # killed or gone: takes no more calls
        self.stopped = False  # killed by the server (to cancel its call, or at shutdown)
        self.draining = False  # forked before a registration: finishes, takes no more

    def kill(self) -> None:
        if self.stopped:
            return
        self.dead = self.stopped = True
        try:
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass


class ProcessPool:
    """Worker processes forked (through a zygote) from the server, for plain functions.

    Not thread-safe: used from the server's event loop only (`run`, `start`), plus
    `prepare` at registration and `shutdown`.
    """

    def __init__(
        self, targets: TargetTable, size: int | None = None, spin: float | None = None
    ) -> None:
        self.targets = targets
        self.size = size or default_size()
        # Each worker's spin window (child.Waiter). By default none on a single CPU:
        # there the server could not write while the worker spins.
        if spin is None:
            spin = DEFAULT_SPIN if default_size() > 1 else 0.0
        self.spin = spin
        self._zygote: _Zygote | None = None
        self._workers: list[_Worker] = []  # current generation
        self._old: list[_Worker] = []  # earlier generations finishing their calls
        self._pending: deque[_Call] = deque()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._setter: ResultSetter | None = None  # completes calls' futures on _loop
        self._foreign_threads = False  # an OS thread unknown to Python did not exit
        self._failure: str | None = None  # why workers could not be started, last time
        self._exiting: list[_Zygote] = []  # retired zygotes told to exit, not reaped yet

    # -- lifecycle -------------------------------------------------------------------

    def prepare(self) -> None:
        """Fork the zygote now if it would miss a target and forking is safe now.

        Called after each registration: while the server still has one thread, the
        zygote is kept current, so workers started later (from any thread) see every
        target without the server ever forking with threads running. (`start` replaces
        it with one forked then if the server still has one thread: workers then see
        state as of serving, not as of the last registration.)
        """
        if self._loop is not None or not self._zygote_is_stale():
            return  # running: the next call brings the workers up to date, on the loop
        if self._send_new_targets():
            return
        # Threads Python has joined may take a moment to exit; threads it does not
        # know of (started by C code) do not: wait for them once only.
        settle = 0.0 if self._foreign_threads else _THREAD_EXIT_WAIT
        if single_threaded(settle):
            self._new_zygote()
        elif threading.active_count() == 1:
            self._foreign_threads = True

    def _send_new_targets(self) -> bool:
        """Send targets published since the zygote started to it and to its workers,
        pickled (importable functions, picklable instances); False if they cannot be."""
        zygote = self._zygote
        if zygote is None:
            return False
        try:
            body = pickle.dumps(self.targets.changes_since(zygote.version), PICKLE)
        except Exception:  # noqa: BLE001 - not picklable: the zygote must be forked anew
            return False
        try:
            zygote.update(body)
        except OSError:
            return False  # the zygote is gone: start a new one
        zygote.version = self.targets.version
        frame = framing.raw_frame(0, framing.TARGETS, body)
        for worker in self._workers:
            self._queue(worker, frame, framing.total(frame))
        return True

    def _zygote_is_stale(self) -> bool:
        return self._zygote is None or self._zygote.version != self.targets.version

    def _new_zygote(self) -> None:
        # Forking with threads running is what `prepare` avoids; it only happens here
        # for a target registered after threads started (Python 3.12+ then warns).
        old = self._zygote
        self._zygote = None
        if old is not None:
            # Its workers not forked yet would miss what the new zygote is made for.
            old.retired = True
            old.abandon()
            if old.workers == 0:
                self._retire(old)
        zygote = _Zygote(self.targets.snapshot(), self.targets.version, self.spin)
        self._zygote = zygote
        self._failure = None
        # A server dropped without shutdown (never started, say) still stops its zygote.
        zygote.finalizer = weakref.finalize(self, zygote.close)
        # Workers forked before a registration cannot see the new target: they finish
        # what they have and stop; new calls go to workers of the new zygote. (Workers
        # of a zygote that died, as current as the new one, stay.)
        current = []
        for worker in self._workers:
            if worker.zygote.version == zygote.version:
                current.append(worker)
                continue
            worker.draining = True
            self._old.append(worker)
            if not worker.inflight:
                self._close_worker(worker)
        self._workers = current

    def start(self, *, wait: bool = False) -> None:
        """Make sure `size` workers run or are on their way, bound to the running event
        loop; with `wait`, block until they run (bounded: see `SPAWN_TIMEOUT`).

        The first start on a loop forks a fresh zygote if the server still has one
        thread, so workers see the process as it is when serving starts (configuration
        loaded after registration included), not as it was at the last registration.

        Raises RPCRuntimeError if `wait` and no worker could be started.
        """
        loop = asyncio.get_running_loop()
        starting = self._loop is not loop
        if starting:
            if self._loop is not None:
                self.shutdown()
            self._loop = loop
            self._setter = ResultSetter(loop)
        zygote = self._zygote
        if (
            starting
            and zygote is not None
            and zygote.workers == 0
            and not zygote.waiting
            and single_threaded(0.0 if self._foreign_threads else _THREAD_EXIT_WAIT)
        ):
            # The registration-time zygote is retired (and reaped) for one forked now.
            self._new_zygote()
        elif self._zygote_is_stale() and not self._send_new_targets():
            self._new_zygote()
        self._fill()
        if wait:
            self._wait_for_workers()
        # A zygote retired above has exited meanwhile (it did while workers were forked).
        self._reap_exiting(block=wait)

    def _fill(self) -> None:
        """Ask the zygote for the workers missing from `size` (not counting those asked
        for already); they come into service as its answers arrive."""
        zygote = self._zygote
        if zygote is None:
            try:
                self._new_zygote()
            except Exception as exc:  # noqa: BLE001 - fork or forkserver failure
                self._give_up(f"a process to fork them could not be started: {exc}")
                return
            zygote = self._zygote
            assert zygote is not None
        loop = self._loop
        assert loop is not None
        if zygote.loop is None:
            zygote.loop = loop
            loop.add_reader(zygote.ctl.fileno(), self._on_zygote_readable, zygote)
        for _ in range(self.size - len(self._workers) - zygote.expected):
            try:
                zygote.request()
            except OSError as exc:
                # The zygote itself died (killed from outside): start a new one.
                self._zygote_failed(zygote, f"it is gone ({exc})", needed=True)
                return
        if zygote.expected and zygote.timer is None:
            zygote.timer = loop.call_at(
                zygote.progress + SPAWN_TIMEOUT, self._on_spawn_timeout, zygote
            )

    def _on_zygote_readable(self, zygote: _Zygote) -> None:
        replies = zygote.replies()
        if replies is None:
            self._zygote_failed(zygote, "it exited")
            return
        current = zygote is self._zygote
        for sock, pid, started, version in replies:
            if current:
                self._add_worker(sock, pid, started, zygote, version)
            else:  # asked of a zygote retired since: that worker exits on end of file
                sock.close()
                started.close()
        if replies:
            if zygote.timer is not None:
                zygote.timer.cancel()
                zygote.timer = None
            if zygote.expected and self._loop is not None:
                zygote.timer = self._loop.call_at(
                    zygote.progress + SPAWN_TIMEOUT, self._on_spawn_timeout, zygote
                )
            self._drain_pending()

    def _on_spawn_timeout(self, zygote: _Zygote) -> None:
        zygote.timer = None
        if zygote is not self._zygote or not zygote.expected:
            return
        self._zygote_failed(
            zygote, f"it did not answer a request for a worker within {SPAWN_TIMEOUT:g}s"
        )

    def _add_worker(
        self, sock: socket.socket, pid: int, started: mmap.mmap, zygote: _Zygote, version: int
    ) -> None:
        worker = _Worker(sock, pid, started, zygote)
        zygote.workers += 1
        assert self._loop is not None
        self._loop.add_reader(worker.fd, self._on_readable, worker)
        if worker.pidfd is not None:
            # Its end is seen on its socket, unless a process it forked holds a copy of
            # that: the pidfd says when the worker itself is gone.
            self._loop.add_reader(worker.pidfd, self._on_exit, worker)
        self._workers.append(worker)
        if version != zygote.version:
            # Targets sent to the zygote after it received this request did not reach
            # the worker: send them (they were picklable then, so they are now; if a
            # later one is not, the zygote is replaced and this worker drained).
            with contextlib.suppress(Exception):
                body = pickle.dumps(self.targets.changes_since(version), PICKLE)
                frame = framing.raw_frame(0, framing.TARGETS, body)
                self._queue(worker, frame, framing.total(frame))

    def _zygote_failed(self, zygote: _Zygote, why: str, *, needed: bool = False) -> None:
        """The zygote is gone or stalled: kill it, and if workers were asked of it (or
        are `needed` of it), ask a new zygote; if that one fails too before answering,
        give up (for now)."""
        needed = needed or zygote.expected > 0
        zygote.close()  # killed if it has requests waiting
        if zygote is not self._zygote:
            return
        self._zygote = None
        if not needed:
            # An idle zygote died: a new one is made when a worker is next needed.
            log.warning("the process that forks the workers (pid %d) is gone", zygote.pid)
            return
        if zygote.replacement and not zygote.proven:
            if zygote.by_forkserver:
                why = f"{why}; {_MAIN_GUARD_HINT}"
            self._give_up(f"two processes that fork workers failed; the last one: {why}")
            return
        log.warning("the process that forks the workers (pid %d) is replaced: %s", zygote.pid, why)
        try:
            self._new_zygote()
        except Exception as exc:  # noqa: BLE001 - fork or forkserver failure: give up
            self._give_up(f"a new process to fork them could not be started: {exc}")
            return
        assert self._zygote is not None
        self._zygote.replacement = True
        self._fill()

    def _give_up(self, why: str) -> None:
        """No worker can be started now: calls queued for one fail with 404 (unless a
        live worker remains to run them); the next call tries again from scratch."""
        self._failure = why
        log.error("no worker process could be started: %s", why)
        if any(not w.dead for w in self._workers):
            return
        while self._pending:
            call = self._pending.popleft()
            if not call.future.done():
                call.future.set_exception(self._unavailable(call, why))

    @staticmethod
    def _unavailable(call: _Call, why: str) -> RPCRuntimeError:
        return RPCRuntimeError(
            f"{call.name!r} was not run: no worker process could be started ({why}); "
            "see the server's log, then call again (new workers are tried) or restart "
            "the server",
            exception="WorkerUnavailable",
        )

    def _wait_for_workers(self) -> None:
        """Block until every worker asked for runs (the loop serves nothing meanwhile)."""
        while True:
            zygote = self._zygote
            if zygote is None or not zygote.expected:
                break
            remaining = zygote.progress + SPAWN_TIMEOUT - time.monotonic()
            if remaining <= 0:
                self._zygote_failed(
                    zygote, f"it did not answer a request for a worker within {SPAWN_TIMEOUT:g}s"
                )
                continue
            with contextlib.suppress(InterruptedError):
                select.select([zygote.ctl], [], [], remaining)
            self._on_zygote_readable(zygote)
        if not self._workers:
            why = self._failure or "unknown"
            raise RPCRuntimeError(
                f"could not start a worker process ({why}); an error the process that "
                "forks them printed is above"
            )

    def shutdown(self) -> None:
        """Kill every worker and the zygote; calls still running fail with 404."""
        workers = self._workers + self._old
        self._workers, self._old = [], []
        for worker in workers:
            worker.kill()
        for worker in workers:
            self._wait_gone(worker)
            self._forget(worker)
            for call in worker.inflight.values():
                if not call.future.done():
                    call.future.set_exception(
                        RPCRuntimeError(
                            f"the server stopped its worker processes while {call.name!r} "
                            "was running (shutdown after the grace period)",
                            exception="WorkerStopped",
                        )
                    )
            worker.inflight.clear()
        while self._pending:
            call = self._pending.popleft()
            if not call.future.done():
                call.future.set_exception(
                    RPCRuntimeError(f"{call.name!r} was not run: the server is stopping")
                )
        zygotes = {w.zygote for w in workers}
        if self._zygote is not None:
            zygotes.add(self._zygote)
        self._zygote = None
        for zygote in zygotes:
            zygote.close()
        self._reap_exiting(block=True)
        self._loop = self._setter = None

    def _wait_gone(self, worker: _Worker) -> None:
        """Block until a killed worker's process has exited: its socket reads EOF, and
        then (the socket closes while the process is still exiting) its pidfd, where
        there is one, says the process has ended."""
        worker.sock.setblocking(True)
        worker.sock.settimeout(_STOP_TIMEOUT)
        try:
            while worker.sock.recv(1 << 16):
                pass
        except OSError:
            pass
        if worker.pidfd is not None:
            poller = select.poll()
            poller.register(worker.pidfd, select.POLLIN)
            with contextlib.suppress(OSError):
                poller.poll(int(_STOP_TIMEOUT * 1000))

    # -- calls -----------------------------------------------------------------------

    async def run(
        self,
        name: str,
        key: str,
        path: tuple[str, ...],
        args: Any,
        kwargs: Any,
        context: CallContext | CallSource | None = None,
    ) -> Any:
        """Run the target published as `key` (attribute `path`) in a worker, with
        `context` as its `current_call()`: a `CallContext` goes along with the call; a
        function building one (`CallSource`) is called, and its context sent, only if the
        function asks for `current_call()`. Response metadata the function sets is added
        to the context.

        Raises RemoteFunctionError for an exception raised by the function, and
        RPCRuntimeError (404) when the call cannot be sent or its worker dies.
        """
        # Not asyncio.get_running_loop(): on 3.11 it costs a getpid() system call. The
        # server starts the pool on its loop (and shutdown forgets it), and `start` binds
        # whatever loop runs when none is bound.
        loop = self._loop
        zygote = self._zygote
        if (
            loop is None
            or zygote is None
            or zygote.version != self.targets.version
            or not self._workers
        ):
            self.start()
            loop = self._loop
            assert loop is not None
        if context is None or type(context) is CallContext:
            packed = framing.pack_context(context)
        else:
            # Building the context and sending it cost the server more than the rest of
            # a small call, and few functions read it: sent when the worker asks.
            packed = _ASK
        args, kwargs = _args_out_of_band(args, kwargs)
        call_id = next(self._ids)
        try:
            payload = _encode(call_id, _CALL, (key, path, args, kwargs, packed))
        except Exception as exc:  # noqa: BLE001 - any pickling failure is the caller's
            raise RPCRuntimeError(
                f"the arguments of {name!r} cannot be sent to a worker process: "
                f"{exception_text(exc)}",
                exception=type_name(exc),
            ) from None
        del args, kwargs
        call = _Call(call_id, name, payload, loop.create_future(), context)
        self._dispatch(call)
        try:
            kind, value = await call.future
        except asyncio.CancelledError:
            self._abandon(call)
            raise
        if kind == _OK:
            result, metadata = value
            if metadata and context is not None:  # set through the context it was sent
                ctx = context if isinstance(context, CallContext) else context()
                ctx.response_metadata.update(metadata)
            return result
        if value[0] == CANCELLED:
            # Raised by the function, not a cancellation of the call: the handler answers
            # it like a coroutine's or a thread's stray CancelledError.
            raise asyncio.CancelledError(value[1])
        raise RemoteFunctionError(*value)

    def _dispatch(self, call: _Call) -> None:
        best = self._pick()
        if best is None:
            if self._failure is not None and not self._workers:
                call.future.set_exception(self._unavailable(call, self._failure))
            else:
                self._pending.append(call)
        else:
            self._send(best, call)

    def _pick(self) -> _Worker | None:
        """The worker to send a call to now: an idle one, else the least loaded whose
        running call is still short; None if the call should wait in the queue."""
        workers = self._workers
        if workers:
            first = workers[0]
            if not first.inflight and not first.dead:
                return first  # what the loop below picks first: the usual case
        best: _Worker | None = None
        load = PIPELINE
        now = 0.0
        arriving: bool | None = None
        for worker in workers:
            n = len(worker.inflight)
            if n < load and n < worker.limit and not worker.dead:
                if n:
                    # Sent ahead only while the call it runs is not slow already: one
                    # that blocks would hold this call although another worker may be
                    # free first (the queue gives it to whichever is). A worker being
                    # forked will be free first: wait for it.
                    if arriving is None:
                        zygote = self._zygote
                        arriving = zygote is not None and zygote.expected > 0
                    if arriving:
                        continue
                    now = now or time.monotonic()
                    if now - worker.busy_since > SHORT_CALL:
                        continue
                best, load = worker, n
                if n == 0:
                    break
        return best

    def _send(self, worker: _Worker, call: _Call) -> None:
        call.worker = worker
        idle = not worker.inflight
        if idle:
            worker.busy_since = _monotonic()
        worker.inflight[call.id] = call
        call.end = worker.queued + call.size
        self._queue(worker, call.payload, call.size, at_once=idle)

    def _queue(
        self, worker: _Worker, buffers: list[bytes | memoryview], size: int, at_once: bool = False
    ) -> None:
        """Write `buffers` (`size` bytes) to `worker`: now if `at_once` (nothing else
        waits for it), else at the end of this loop pass with whatever else is queued."""
        worker.out += buffers
        worker.queued += size
        if worker.writing or worker.write_scheduled:
            return
        if at_once:
            self._write(worker)
        else:
            worker.write_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._write_scheduled, worker)

    def _write_scheduled(self, worker: _Worker) -> None:
        worker.write_scheduled = False
        if not worker.writing:
            self._write(worker)

    def _write(self, worker: _Worker) -> None:
        out = worker.out
        try:
            while out:
                sent = worker.sock.sendmsg(out if len(out) <= _IOV_MAX else out[:_IOV_MAX])
                worker.delivered += sent
                if worker.delivered == worker.queued:
                    out.clear()  # all of it: the usual case
                else:
                    framing.advance(out, sent)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            # The worker is gone; what was not written never reached it. What it sent
            # before it ended is read first (`_on_exit`): results it wrote before a crash
            # settle their calls, which must not count as running, nor run again.
            out.clear()
            if not worker.dead:
                worker.dead = True
                assert self._loop is not None
                self._loop.call_soon(self._on_exit, worker)
            return
        writing = bool(out)
        if writing != worker.writing:
            assert self._loop is not None
            if writing:
                self._loop.add_writer(worker.fd, self._write, worker)
            else:
                self._loop.remove_writer(worker.fd)
            worker.writing = writing

    def _abandon(self, call: _Call) -> None:
        """A call was cancelled: forget it, or stop the worker running it."""
        worker = call.worker
        if worker is None:
            with contextlib.suppress(ValueError):
                self._pending.remove(call)
        elif next(iter(worker.inflight), None) == call.id:
            worker.kill()  # its EOF fails nothing else: the calls behind it move on

    # -- results ---------------------------------------------------------------------

    def _on_readable(self, worker: _Worker) -> None:
        read = self._read_results(worker)
        if read is None:
            return  # the worker is gone
        if worker.draining or self._pending or worker.inflight:
            self._after_results(worker)
        completed, last = read
        if last is not None:
            future, outcome = last
            if future.done():
                return
            if completed == 1 and self._setter is not None:
                # The frames just read are no longer referenced here: a large result's
                # receive buffer is freed before the reply to it is built. Results read
                # together share the next loop pass anyway; a lone one goes on now.
                self._setter.set_result_now(future, outcome)
            else:
                future.set_result(outcome)

    def _on_exit(self, worker: _Worker) -> None:
        """The worker process ended (its pidfd is readable)."""
        if worker.fd == -1:
            return  # seen on its socket already
        read = self._read_results(worker)  # what it sent before it ended
        if read is not None:
            last = read[1]
            if last is not None and not last[0].done():
                last[0].set_result(last[1])
            # No end of file: a process it started holds its socket open.
            self._worker_gone(worker)

    def _read_results(self, worker: _Worker) -> tuple[int, _Settled | None] | None:
        """Read what the worker sent and settle the calls it answered: how many, and the
        last one's future and outcome, for the caller to set (every earlier one is set
        here); None if the worker is gone (everything read set)."""
        reader = worker.reader
        recv_into = worker.sock.recv_into
        completed = 0
        last: _Settled | None = None
        while True:
            try:
                n = recv_into(reader.buffer())
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                n = 0
            if n == 0:
                if last is not None and not last[0].done():
                    last[0].set_result(last[1])
                self._worker_gone(worker)
                return None
            try:
                frames = reader.received(n)
            except Exception as exc:  # noqa: BLE001 - ChannelError, MemoryError: any garbage
                log.error(
                    "worker process %d sent what is not a frame (%s): its channel is "
                    "unusable, it is replaced and its running call fails",
                    worker.pid,
                    exc,
                )
                if last is not None and not last[0].done():
                    last[0].set_result(last[1])
                worker.kill()
                self._worker_gone(worker)
                return None
            for call_id, kind, body in frames:
                if kind == _BUFFER:
                    worker.buffers.append(body)
                elif kind == _CONTEXT:
                    self._send_context(worker, call_id)
                else:
                    buffers = worker.buffers
                    if buffers:
                        worker.buffers = []
                    settled = self._complete(worker, call_id, kind, body, buffers)
                    if settled is not None:
                        if last is not None and not last[0].done():
                            last[0].set_result(last[1])
                        last = settled
                    completed += 1
            if not reader.receiving_large_frame:
                break
        return completed, last

    def _send_context(self, worker: _Worker, call_id: int) -> None:
        """The function of call `call_id` asked for `current_call()`: send its context
        (None if the call is gone: it was cancelled, and its worker is being stopped)."""
        call = worker.inflight.get(call_id)
        ctx: CallContext | None = None
        if call is not None and not call.future.done():
            context = call.context
            ctx = context if context is None or isinstance(context, CallContext) else context()
        body = pickle.dumps(framing.pack_context(ctx), PICKLE)
        frame = framing.raw_frame(call_id, framing.CONTEXT, body)
        self._queue(worker, frame, framing.total(frame), at_once=True)

    def _complete(
        self,
        worker: _Worker,
        call_id: int,
        kind: int,
        body: bytes | bytearray,
        buffers: list[bytearray | bytes],
    ) -> _Settled | None:
        """Take call `call_id`'s result frame: its future and the outcome to set it to
        (the caller sets it); None if nothing is to be set (the call is gone, or its
        result could not be read: that failure is set here)."""
        call = worker.inflight.pop(call_id, None)
        if call is None:
            return None
        # How long the worker spent on it: from when it could start it until now.
        now = _monotonic()
        cost = worker.cost = worker.cost + _SMOOTHING * (now - worker.busy_since - worker.cost)
        worker.busy_since = now
        worker.limit = PIPELINE if cost < SHORT_CALL else 1
        future = call.future
        if future.done():
            return None
        try:
            if buffers or type(body) is not bytes:
                value = framing.decode(body, buffers, worker.reader)
            else:  # a small message, every value in it (framing.decode's usual case)
                value = _loads(body)
        except Exception as exc:  # noqa: BLE001 - fails this call only
            future.set_exception(
                RPCRuntimeError(
                    f"the result of {call.name!r} cannot be read back from the worker "
                    f"process: {exception_text(exc)}",
                    exception=type_name(exc),
                )
            )
            return None
        return future, (kind, value)

    def _after_results(self, worker: _Worker) -> None:
        if worker.draining:
            if not worker.inflight:
                self._close_worker(worker)
            return
        # Refill this worker from the queue (its slots just freed).
        pending = self._pending
        while pending and len(worker.inflight) < worker.limit and not worker.dead:
            call = pending.popleft()
            if not call.future.done():
                self._send(worker, call)
        # The call it runs now was cancelled while it waited: stop the worker.
        head = next(iter(worker.inflight.values()), None)
        if head is not None and head.future.done():
            worker.kill()

    def _worker_gone(self, worker: _Worker) -> None:
        """The worker's process ended: fail its running call, requeue the others."""
        if worker.fd == -1:
            return  # already handled
        worker.dead = True
        started = STARTED.unpack_from(worker.started)[0]  # (before _forget unmaps it)
        self._forget(worker)
        calls = list(worker.inflight.values())
        worker.inflight.clear()
        # Calls run in order, one at a time: only the oldest call the worker received
        # in full can have been running, and it was if the worker marked it started
        # (child.STARTED). The others never started, nor did that one if the worker
        # died idle (killed as calls were sent to it, say): run them elsewhere.
        if calls and calls[0].end <= worker.delivered and started == calls[0].id:
            running = calls.pop(0)
            if not running.future.done():
                how = "was stopped" if worker.stopped else "died"
                running.future.set_exception(
                    RPCRuntimeError(
                        f"the worker process (pid {worker.pid}) running {running.name!r} "
                        f"{how} during the call; it was replaced",
                        exception="WorkerDied",
                    )
                )
        for call in reversed(calls):
            if not call.future.done():
                call.worker = None
                self._pending.appendleft(call)
        if worker in self._workers:
            self._workers.remove(worker)
            if self._loop is not None:
                self._fill()
        else:
            with contextlib.suppress(ValueError):
                self._old.remove(worker)
        self._drain_pending()

    def _drain_pending(self) -> None:
        pending = self._pending
        while pending:
            call = pending[0]
            if call.future.done():
                pending.popleft()
                continue
            best = self._pick()
            if best is None:
                return  # the first worker to finish a call takes it (`_after_results`)
            pending.popleft()
            self._send(best, call)

    def _close_worker(self, worker: _Worker) -> None:
        """Stop a worker that has no call in flight (its process exits on EOF)."""
        self._forget(worker)
        if worker in self._old:
            self._old.remove(worker)

    def _forget(self, worker: _Worker) -> None:
        if worker.fd == -1:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(worker.fd)
            if worker.writing:
                self._loop.remove_writer(worker.fd)
        worker.sock.close()
        worker.started.close()  # (a mapping holds a descriptor of its own)
        worker.fd = -1
        if worker.pidfd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(worker.pidfd)
            os.close(worker.pidfd)
            worker.pidfd = None
        zygote = worker.zygote
        zygote.workers -= 1
        if zygote.retired and zygote.workers == 0:
            self._retire(zygote)

    def _retire(self, zygote: _Zygote) -> None:
        """Stop a zygote no longer used, without waiting: it exits while the server goes
        on (a fresh zygote forks the next workers meanwhile), and is reaped later."""
        zygote.shut()
        self._exiting.append(zygote)
        self._reap_exiting(block=False)

    def _reap_exiting(self, *, block: bool) -> None:
        if self._exiting:
            self._exiting = [z for z in self._exiting if not z.reap(block)]
