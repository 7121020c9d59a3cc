"""A worker subprocess whose progress lines are read on threads and drained by the caller.

Long work (inference, training) runs in a separate Python process so the Slicer GUI never
blocks and a crash cannot take Slicer down. The worker prints one JSON object per line on stdout
(and/or appends them to an events file); reader threads turn them into event dicts on a queue.
The caller (a ``QTimer`` on Slicer's main thread) calls :meth:`WorkerProcess.drainEvents`, so
MRML and Qt are only ever touched from the main thread. Threads here never touch either.

Cancelling kills the whole process tree: the worker is started in its own process group
(session) on POSIX, or its own process group on Windows, and the group is killed, so
grandchildren (e.g. data-loader processes) cannot survive their parent.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

#: Event emitted once, last, when the process has ended and every line has been read.
EXIT_EVENT = "exit"

#: Windows process-creation flags (numbers, so the options can be built and tested anywhere).
CREATE_NEW_PROCESS_GROUP = 0x00000200
CREATE_NO_WINDOW = 0x08000000
STARTF_USESHOWWINDOW = 0x00000001
SW_HIDE = 0


def popenOptions(platform: str | None = None) -> dict:
    """``subprocess.Popen`` keyword arguments for a worker on ``platform`` (default: this one).

    POSIX: its own session, so cancel can kill the whole process group. Windows: its own process
    group, and no console window: ``PythonSlicer.exe`` is a console program and would open one
    (Slicer's ``launchConsoleProcess`` hides it the same way, with a hidden-window start-up).

    Example:
        >>> popenOptions("linux")
        {'start_new_session': True}
        >>> hex(popenOptions("win32")["creationflags"])
        '0x8000200'
    """
    platform = sys.platform if platform is None else platform
    if platform != "win32":
        return {"start_new_session": True}
    options = {"creationflags": CREATE_NEW_PROCESS_GROUP | CREATE_NO_WINDOW}
    if hasattr(subprocess, "STARTUPINFO"):  # only exists on Windows
        info = subprocess.STARTUPINFO()
        info.dwFlags |= STARTF_USESHOWWINDOW
        info.wShowWindow = SW_HIDE
        options["startupinfo"] = info
    return options


def taskkillOptions(platform: str | None = None) -> dict:
    """Keyword arguments for running ``taskkill`` without flashing a console window."""
    platform = sys.platform if platform is None else platform
    return {"creationflags": CREATE_NO_WINDOW} if platform == "win32" else {}


def parseEventLine(line: str, stream: str = "stdout") -> dict:
    """Turn one output line into an event dict.

    A JSON object with an ``"event"`` key is returned as is; anything else becomes a ``log``
    event, so stray prints (warnings, library banners) never break the protocol.

    Example:
        >>> parseEventLine('{"event": "progress", "fraction": 0.5}')
        {'event': 'progress', 'fraction': 0.5}
        >>> parseEventLine("hello")
        {'event': 'log', 'stream': 'stdout', 'text': 'hello'}
    """
    text = line.rstrip("\r\n")
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, dict) and "event" in value:
            return value
    return {"event": "log", "stream": stream, "text": text}


class WorkerProcess:
    """Run ``command`` and collect its events.

    Example (blocking use, as in scripts and tests)::

        worker = WorkerProcess([sys.executable, "-c", "print('{\\"event\\": \\"hi\\"}')"])
        worker.start()
        worker.wait()
        events = worker.drainEvents()  # [{'event': 'hi'}, {'event': 'exit', ...}]
    """

    def __init__(
        self, command, env=None, cwd=None, eventsFile=None, errorLineCount=20, pollInterval=0.2
    ):
        self.command = [str(part) for part in command]
        self.env = env
        self.cwd = cwd
        self.eventsFile = str(eventsFile) if eventsFile else None
        self.pollInterval = pollInterval
        self._events = queue.Queue()
        self._errorLines = collections.deque(maxlen=errorLineCount)
        self._process = None
        self._threads = []
        self._watcher = None
        self._cancelled = False
        self._finished = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and its reader threads."""
        if self._process is not None:
            raise RuntimeError("This worker was already started.")
        # An events file that already exists (a resumed run appends to it): only what this run
        # adds is reported. Measured before the process starts, so none of its lines is missed.
        try:
            self._eventsFileStart = os.path.getsize(self.eventsFile) if self.eventsFile else 0
        except OSError:
            self._eventsFileStart = 0
        kwargs = popenOptions()
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **kwargs,
        )
        self._threads = [
            threading.Thread(
                target=self._readStream, args=(self._process.stdout, "stdout"), daemon=True
            ),
            threading.Thread(
                target=self._readStream, args=(self._process.stderr, "stderr"), daemon=True
            ),
        ]
        if self.eventsFile:
            self._threads.append(threading.Thread(target=self._tailEventsFile, daemon=True))
        for thread in self._threads:
            thread.start()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        """True until the process ended and all its output was read."""
        return self._process is not None and not self._finished.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    @property
    def returnCode(self) -> int | None:
        return self._process.returncode if self._finished.is_set() else None

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the process ended and all output was read; return its exit code."""
        self._finished.wait(timeout)
        return self.returnCode

    def cancel(self, timeout: float = 5.0) -> None:
        """Kill the process and all its descendants, then wait for the readers to finish."""
        if self._process is None or self._finished.is_set():
            return
        self._cancelled = True
        self._killTree(signal.SIGTERM if sys.platform != "win32" else None)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._killTree(signal.SIGKILL if sys.platform != "win32" else None)
            self._process.wait(timeout)
        if sys.platform != "win32":
            # Descendants that ignored SIGTERM while the leader exited: finish them off.
            self._killTree(signal.SIGKILL)
        self._finished.wait(timeout)

    def _killTree(self, sig) -> None:
        if sys.platform == "win32":
            subprocess.run(
                ["taskkill", "/F", "/T", "/PID", str(self._process.pid)],
                capture_output=True,
                check=False,
                **taskkillOptions(),
            )
            return
        try:
            os.killpg(self._process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    # -- results ---------------------------------------------------------------------------------

    def drainEvents(self) -> list[dict]:
        """All events that arrived since the last call, in arrival order (never blocks)."""
        events = []
        while True:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                return events

    def lastErrorLines(self) -> list[str]:
        """The last lines the process wrote on stderr (for error reports)."""
        return list(self._errorLines)

    # -- threads ---------------------------------------------------------------------------------

    def _readStream(self, stream, name: str) -> None:
        for line in iter(stream.readline, ""):
            if name == "stderr":
                if line.strip():
                    self._errorLines.append(line.rstrip("\r\n"))
                self._events.put({"event": "log", "stream": "stderr", "text": line.rstrip()})
            else:
                self._events.put(parseEventLine(line, name))
        stream.close()

    def _tailEventsFile(self) -> None:
        # Bytes, not text: offsets stay exact, and a line is decoded only once it is complete.
        position = self._eventsFileStart
        pending = b""
        while True:
            done = self._process.poll() is not None
            try:
                with open(self.eventsFile, "rb") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position += len(chunk)
            except FileNotFoundError:
                chunk = b""
            pending += chunk
            # Only complete lines: the writer may be in the middle of one.
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    self._events.put(parseEventLine(line.decode("utf-8", "replace"), "events"))
            if done:
                if pending.strip():
                    self._events.put(parseEventLine(pending.decode("utf-8", "replace"), "events"))
                return
            time.sleep(self.pollInterval)

    def _watch(self) -> None:
        self._process.wait()
        for thread in self._threads:
            thread.join()
        self._events.put(
            {
                "event": EXIT_EVENT,
                "returnCode": self._process.returncode,
                "cancelled": self._cancelled,
            }
        )
        self._finished.set()


class PollingJob:
    """The lifecycle shared by the module's jobs: one worker process, polled from the main thread.

    A job starts its :class:`WorkerProcess` in ``start()``, then ``poll()`` drains the worker's
    events, hands each to :meth:`_onEvent` and, on the worker's exit event, calls
    ``_finish(cancelled, returnCode)``; :meth:`cancel` kills the worker and finishes as
    cancelled. Closing the scene the job's nodes live in cancels it (:meth:`_observeSceneClose`).
    The GUI drains jobs with a QTimer; scripts and tests block with :meth:`wait` instead.
    """

    RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"

    #: The worker, in words, for the message of an unexpected exit.
    workerName = "worker"

    def _resetJob(self, observeScene: bool) -> None:
        """The state every job starts with (called by the subclasses' ``__init__``)."""
        self.observeScene = observeScene
        self.state = None
        self.errorMessage = ""
        self.tempDir = None
        self.worker = None
        self._scene = None
        self._sceneObserver = None

    @property
    def done(self) -> bool:
        return self.state in (self.SUCCEEDED, self.FAILED, self.CANCELLED)

    def poll(self) -> list[dict]:
        """Drain the worker's events (main thread only); finishes the job on the exit event."""
        if self.worker is None:
            return []
        events = self.worker.drainEvents()
        for event in events:
            if event.get("event") == EXIT_EVENT:
                if self.state == self.RUNNING:
                    self._finish(event.get("cancelled", False), event.get("returnCode"))
            else:
                self._onEvent(event)
        return events

    def _onEvent(self, event: dict) -> None:
        """One protocol event of the worker (progress, log, done, error...)."""

    def cancel(self) -> None:
        """Kill the worker's process tree and finish as cancelled."""
        if self.state != self.RUNNING:
            return
        self.worker.cancel()
        self._finish(True, None)

    def _finish(self, cancelled: bool, returnCode) -> None:
        raise NotImplementedError  # each job knows what its result is

    def _unexpectedExit(self, returnCode) -> str:
        """The sentence for a worker that stopped without saying why, with its last stderr."""
        lines = self.worker.lastErrorLines()[-5:]
        details = (": " + " | ".join(lines)) if lines else "."
        return f"The {self.workerName} stopped unexpectedly (exit code {returnCode}){details}"

    def _observeSceneClose(self, node) -> None:
        """Cancel when the scene holding ``node`` closes: the nodes the result needs go away."""
        if self.observeScene and node is not None and node.GetScene() is not None:
            self._scene = node.GetScene()
            self._sceneObserver = self._scene.AddObserver(
                self._scene.StartCloseEvent, lambda *args: self.cancel()
            )

    def _releaseJob(self) -> None:
        """Stop observing the scene and remove the job's temporary folder."""
        if self._sceneObserver is not None:
            self._scene.RemoveObserver(self._sceneObserver)
            self._sceneObserver = None
        if self.tempDir is not None:
            shutil.rmtree(self.tempDir, ignore_errors=True)

    pollInterval = 0.1

    def wait(
        self, timeout: float | None = None, pollInterval: float | None = None, processEvents=None
    ) -> str:
        """Block until done (cancelling after ``timeout`` seconds); return the final state.

        Sleeps between polls, never spins; ``processEvents`` (inside Slicer:
        ``slicer.app.processEvents``) is called between polls so the GUI keeps drawing.
        """
        interval = self.pollInterval if pollInterval is None else pollInterval
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            self.poll()
            if processEvents is not None:
                processEvents()
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                break
            time.sleep(interval)
        return self.state


def formatSeconds(seconds) -> str:
    """A job's time left in words, for its progress bar.

    Example:
        >>> formatSeconds(3725), formatSeconds(75), formatSeconds(None)
        ('1 h 02 min', '1 min 15 s', '0 s')
    """
    seconds = int(round(seconds or 0))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
