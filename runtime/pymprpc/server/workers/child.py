"""Code that runs in the forked processes: the zygote, and the workers it forks.

The zygote is forked from the server while the server has a single thread (so forking
is safe, and Python 3.12+ has nothing to warn about); it inherits every registered
function, including ones defined inside `with Server(...)`. It then forks each worker
on request, however many threads the server has started since. A worker reads call
frames from its socket, runs them one at a time in order, and writes each result
before starting the next call; before it starts a call it writes the call's number into a
word of memory it shares with the server (`STARTED`), so the server knows which call was
running when a worker dies, and that none was if the worker died idle. Neither process
takes SIGINT or SIGTERM: the server decides when they stop.
"""

from __future__ import annotations

import inspect
import mmap
import os
import pickle
import select
import signal
import socket
import stat
import struct
import threading
import time
from collections import deque
from typing import Any, Final, cast

from ... import errors
from ...context import CallContext, reset_current, set_current
from ...errors import LocalProtocolError, MPRPCError, exception_text, traceback_text, type_name
from ...protocol import messages
from ...protocol.codec import shared_codec
from . import framing
from .targets import resolve

_loads: Final = pickle.loads
_BINARY: Final = (bytes, bytearray, memoryview)

PID: Final = struct.Struct("<q")
# The number of the last call a worker started, in a word shared with the server (0: none
# yet): written before the call runs, read by the server only once the worker is gone.
STARTED: Final = struct.Struct("=Q")


UPDATE_LENGTH: Final = struct.Struct("<Q")


def run_zygote(ctl: socket.socket, targets: dict[str, Any], spin: float = 0.0) -> None:
    """Serve requests on `ctl` until it closes: b"w" with a socket and the file of its
    `STARTED` word (fork a worker serving it, reply with its pid), or b"t", a length and
    pickled targets to add. `spin` is each worker's spin window (see `Waiter`)."""
    _quiet_signals()
    _detach_inherited_sockets(keep={ctl.fileno()})
    # Workers are reaped by the kernel as soon as they exit: no zombies, whoever ends first.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    ctl.setblocking(True)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1, 2)
        except OSError:
            return
        if not msg:
            for fd in fds:
                os.close(fd)
            return
        if msg == b"t":
            for fd in fds:
                os.close(fd)
            size = UPDATE_LENGTH.unpack(_recv_exactly(ctl, UPDATE_LENGTH.size))[0]
            targets.update(pickle.loads(_recv_exactly(ctl, size)))
            continue
        if not fds:
            continue
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                ctl.close()
                started = fds[1] if len(fds) > 1 else -1
                run_worker(socket.socket(fileno=fds[0]), targets, spin, started)
            except BaseException:  # noqa: BLE001 - a worker never returns into server code
                status = 1
            finally:
                os._exit(status)
        for fd in fds:
            os.close(fd)
        ctl.sendall(PID.pack(pid))


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the server closed the zygote's socket")
        data += chunk
    return bytes(data)


def run_worker(
    sock: socket.socket, targets: dict[str, Any], spin: float = 0.0, started: int = -1
) -> None:
    """Run calls from `sock` until the server closes it; `started` is the file holding
    the `STARTED` word shared with the server (-1: none, a word of its own)."""
    word: mmap.mmap | bytearray
    if started >= 0:
        word = mmap.mmap(started, STARTED.size)
        os.close(started)
    else:
        word = bytearray(STARTED.size)
    _Serving(sock, targets, spin, word).run()


def _sched_yield() -> None:
    """Let another runnable process have this CPU (a no-op where the OS has no call)."""
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()


_SCHED_YIELD: Final = getattr(os, "sched_yield", None)


class Waiter:
    """How a worker waits for its next frame: spin briefly, then sleep.

    Waking a sleeping process costs its waker tens of microseconds on a virtual machine
    whose idle CPUs halt (bench/wakeups.py), and a call to the pool pays two such
    wake-ups more than a coroutine. So a worker whose last wait was short (at most
    `window` seconds: calls are arriving back to back, as from a sequential client)
    polls for the next frame for up to `window` before it sleeps, with a `sched_yield()`
    between polls (it helps the server on a shared CPU, though Linux's current scheduler
    gives little away for it); the server's write then finds it awake.
    A worker whose last wait was longer sleeps at once: sparse calls cost no spinning,
    and a busy-to-idle switch wastes at most one window. A window of 0 never spins.
    """

    __slots__ = ("_clock", "_poll", "_yield", "spinning", "window")

    def __init__(
        self,
        poll: Any,
        window: float,
        clock: Any = time.perf_counter,
        yield_cpu: Any = None,
    ) -> None:
        self._poll = poll  # select.poll().poll: a timeout in ms, None to block
        self.window = window
        self._clock = clock
        self._yield = yield_cpu or _sched_yield
        self.spinning = False  # whether the next wait spins first

    def wait(self) -> None:
        """Return once the socket is readable (or closed)."""
        window = self.window
        if not window:
            self._poll()
            return
        clock = self._clock
        start = clock()
        if self.spinning:
            poll, yield_cpu = self._poll, self._yield
            end = start + window
            while not poll(0):
                yield_cpu()
                if clock() > end:
                    poll()
                    break
        else:
            self._poll()
        self.spinning = clock() - start <= window


class _Serving:
    """A worker's end of its socket: frames in, one call at a time, results out."""

    def __init__(
        self,
        sock: socket.socket,
        targets: dict[str, Any],
        spin: float,
        started: mmap.mmap | bytearray | None = None,
    ) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.started = bytearray(STARTED.size) if started is None else started
        self.targets = targets
        # Wait for frames in poll, never in a blocked recv: the kernel wakes a socket's
        # sleeping readers whenever its peer reads what it sent (write space), so a
        # worker blocked in recv woke once more per call, after the server read its
        # result, only to sleep again. Poll waits for input only.
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        self._wait = Waiter(poller.poll, spin).wait
        self.reader = framing.FrameReader()
        self.frames: deque[tuple[int, int, bytes | bytearray]] = deque()  # read, not run
        self._asking = threading.Lock()

    def _read(self) -> bool:
        """Wait for and read more frames into `frames`; False once the server is gone."""
        self._wait()
        reader = self.reader
        n = self.sock.recv_into(reader.buffer())
        if n == 0:
            return False
        self.frames.extend(reader.received(n))
        return True

    def run(self) -> None:
        frames, targets, sock = self.frames, self.targets, self.sock
        started, mark = self.started, STARTED.pack_into
        buffers: list[bytearray | bytes] = []
        while True:
            while not frames:
                if not self._read():
                    return
            call_id, kind, body = frames.popleft()
            if kind == framing.CALL:
                values, buffers = buffers, []
                mark(started, 0, call_id)  # from here on, this call counts as running
                _send_all(sock, self._run_one(call_id, body, values))
            elif kind == framing.BUFFER:
                buffers.append(body)
            elif kind == framing.TARGETS:
                targets.update(framing.decode(body, []))

    def context_of(self, call_id: int) -> CallContext | None:
        """Ask the server for the context of the call running now (the function asked
        for it), reading on: frames that arrive before the answer wait their turn."""
        with self._asking:  # a function's own threads may ask at the same time
            _send_all(self.sock, framing.raw_frame(call_id, framing.CONTEXT, b""))
            frames = self.frames
            seen = len(frames)  # frames already read are calls queued behind this one
            while True:
                while seen < len(frames):
                    frame = frames[seen]
                    if frame[1] == framing.CONTEXT and frame[0] == call_id:
                        del frames[seen]
                        return framing.unpack_context(framing.decode(frame[2], []))
                    seen += 1
                if not self._read():
                    os._exit(0)  # the server is gone: nobody waits for this call

    def _run_one(
        self, call_id: int, body: bytes | bytearray, buffers: list[bytearray | bytes]
    ) -> list[bytes | memoryview]:
        try:
            if buffers or type(body) is not bytes:
                message = framing.decode(body, buffers, self.reader)
            else:  # a small message, every value in it (framing.decode's usual case)
                message = _loads(body)
            key, path, args, kwargs, packed = message
            del body, buffers, message
            func = resolve(self.targets, key, path)
            # With the call's context current (built, or asked for, only if the function
            # asks for it); what response metadata it sets goes back.
            source = None if packed is None else _LazyContext(self, call_id, packed)
            token = set_current(source)
            try:
                result = func(*args, **kwargs)
            finally:
                reset_current(token)
            del args, kwargs
            ctx = source.ctx if source is not None else None
            metadata = dict(ctx.response_metadata) if ctx is not None else None
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: it fails the call only
            return framing.encode(call_id, framing.ERROR, _error(exc))
        try:
            # Only a binary value may travel out of band (framing.out_of_band).
            sent = framing.out_of_band(result) if type(result) in _BINARY else result
            return framing.encode(call_id, framing.OK, (sent, metadata))
        except BaseException as exc:  # noqa: BLE001 - an unpicklable result fails its call
            # Too deep to pickle: if no connection could send it either, the server may
            # answer it as it does on any other executor (405), in the connection's words.
            refusal = _messagepack_refusal(result) if isinstance(exc, RecursionError) else None
            name = ".".join((key.split(":", 1)[-1], *path))
            message = (
                f"the result of {name!r} cannot be sent back from the worker process: "
                f"{exception_text(exc)}"
            )
            if inspect.iscoroutine(result):
                result.close()  # never run: no "coroutine was never awaited" warning
                message = (
                    f"{name!r} returned a coroutine, which cannot run in a worker process: "
                    "declare it `async def` (it then runs on the server's event loop) or "
                    'register it with executor="thread"'
                )
            elif inspect.isgenerator(result):
                result.close()
                message = (
                    f"{name!r} returned a generator, which cannot be sent: streams must be "
                    "async generator functions (async def ... yield)"
                )
            unsent = (type_name(exc), message, "", type(result).__name__, refusal)
            return framing.encode(call_id, framing.ERROR, unsent)


class _LazyContext:
    """A call's `current_call()` source in a worker: the `CallContext` is built on first
    use only, from the fields the server sent, or (`framing.ASK`) from the fields it
    sends when asked; most functions never ask, and building it cost more than a small
    call itself."""

    __slots__ = ("call_id", "ctx", "packed", "serving")

    def __init__(self, serving: _Serving, call_id: int, packed: Any) -> None:
        self.serving = serving
        self.call_id = call_id
        self.packed = packed
        self.ctx: CallContext | None = None

    def __call__(self) -> CallContext:
        ctx = self.ctx
        if ctx is None:
            if self.packed is framing.ASK:
                ctx = self.serving.context_of(self.call_id)
            else:
                ctx = framing.unpack_context(self.packed)
            if ctx is None:
                raise LookupError("the server no longer knows this call's context")
            self.ctx = ctx
        return ctx


# The type name sent for asyncio.CancelledError (see ProcessPool.call).
CANCELLED: Final = "asyncio.CancelledError"


def _messagepack_refusal(result: Any) -> str | None:
    """Why a connection would refuse to send `result`, in its words (None: it would).

    The server uses it for an untyped method only: a typed method's result is converted
    before it is sent.
    """
    try:
        shared_codec().encode(messages.result("", result))
    except LocalProtocolError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - user code ran (a value's own methods)
        return None
    return None


def _error(exc: BaseException) -> tuple[Any, ...]:
    """What the server is sent of an exception a function raised: its type's name, its
    text and traceback, and, for a coded `pymprpc.errors` exception (a function may
    answer 403 or 402 itself, as on any executor), what the server rebuilds it from."""
    coded = _coded(exc)
    if coded is not None:
        return (type_name(exc), exception_text(exc), traceback_text(exc), None, None, coded)
    message = exception_text(exc)
    # asyncio's CancelledError (checked by name: the worker need not import asyncio) is
    # marked, so the server answers it as it does for a coroutine or thread (407/404).
    # Names read through type_name: a class whose metaclass breaks them still fails
    # its call only (not the worker).
    name = (
        CANCELLED
        if type_name(exc, "__qualname__") == "CancelledError"
        and type_name(exc, "__module__") == "asyncio.exceptions"
        else type_name(exc)
    )
    return name, message, traceback_text(exc)


def _coded(exc: BaseException) -> tuple[str, str, str | None, Any] | None:
    """A coded error as (its nearest class in pymprpc.errors, message, exception name,
    DATA), each of which pickles; None for an error without a code (it fails the call
    with 404 on every executor) or one no class of pymprpc.errors can rebuild (its
    attributes are not as the class makes them: the generic 404 says what it can)."""
    # By type(), not isinstance: that reads the exception's own __class__, which may raise.
    if not issubclass(type(exc), MPRPCError):
        return None
    exc = cast(MPRPCError, exc)
    try:
        if exc.code is None:
            return None
        for cls in type(exc).__mro__:
            if getattr(errors, cls.__name__, None) is cls and cls.__init__ is MPRPCError.__init__:
                break
        else:
            return None
        message, exception, data = exc.message, exc.exception, exc.data
        if type(message) is not str or not (exception is None or type(exception) is str):
            return None
    except Exception:  # noqa: BLE001 - a subclass's own properties may raise
        return None
    try:
        framing.encode(0, framing.ERROR, (data,))  # DATA the server cannot get is left out
    except BaseException:  # noqa: BLE001 - any value: unpicklable, raising, too deep
        data = None
    if exception is None and type(exc) is not cls:
        exception = type_name(exc, "__name__")  # a subclass's own name, as sent elsewhere
    return cls.__name__, message, exception, data


def _send_all(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    if len(buffers) == 1:  # a small message: one buffer, sent whole by a blocking socket
        sock.sendall(buffers[0])
        return
    while buffers:
        framing.advance(buffers, sock.sendmsg(buffers))


def _quiet_signals() -> None:
    # The server's event loop owns the signal wakeup fd; SIGINT and SIGTERM sent to the
    # whole process group (Ctrl-C, systemd) must let running calls finish, so the
    # server, not the signal, ends the workers after its grace period.
    # A handler that does nothing, not SIG_IGN: an ignored signal stays ignored across
    # exec, so a program a function starts (subprocess) could not be terminated, while
    # a caught one is reset to its default there.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, _let_calls_finish)
    signal.signal(signal.SIGTERM, _let_calls_finish)


def _let_calls_finish(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM in a worker: nothing (the server ends its workers)."""


def _detach_inherited_sockets(keep: set[int]) -> None:
    """Point every inherited stream socket fd but `keep` at /dev/null.

    A forked process holds copies of the server's listening socket, of every client
    connection and of other workers' sockets; without this, closing a connection in the
    server would not reach the peer while the copy lives. dup2 (not close) keeps the fd
    numbers taken, so a stale socket object closing its fd later cannot hit a new one.
    Datagram sockets have no connection to keep open: the application's (a statsd or
    syslog client opened at import) keep working in the workers.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
        for name in os.listdir(fd_dir):
            fd = int(name)
            if fd <= 2 or fd == null or fd in keep:
                continue
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode) and not _is_datagram(fd):
                    os.dup2(null, fd)
            except OSError:
                continue
    finally:
        os.close(null)


def _is_datagram(fd: int) -> bool:
    """Whether socket `fd` is a datagram socket (read without taking the fd over); False
    for one Python cannot describe, which is then detached as before."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        return sock.type == socket.SOCK_DGRAM
    finally:
        sock.detach()
