"""An Encoder in a process of its own, so that the model's forward pass never waits for the
service's interpreter lock.

A transformer's forward pass is a few hundred small torch operations, each
called from Python: between two operations the inference thread must take
the global interpreter lock again. In a busy server the event loop and the
other threads hold it most of the time, so every operation waits its turn:
a 14-query forward pass of all-MiniLM-L6-v2 that takes 20 ms alone took
115-133 ms inside the search service under 50 concurrent clients, and 81 ms
next to one thread running Python (bench/embedding_gil.py). In a child
process the model has an interpreter of its own; the service only sends
texts and receives vectors through a pipe (a wait that releases the lock).

The child is a fresh interpreter (torch is not fork-safe); it loads the model
and answers one request at a time. Small batches (queries) run on one
torch thread: two threads barely speed them up and their spin-waits take a
core from everything else; large batches (documents being indexed) use
every core. If the child dies (killed, out of memory), the call that saw
it fails with a message saying so, and the next call starts a new one.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import services
from services.common.errors import Unavailable
from services.kernel.embedding.encoder import Encoded
from services.kernel.embedding.model_config import ModelConfig, ModelLoadError

log = logging.getLogger(__name__)

# Padded tokens in one batch (rows x longest row) from which every core is used: a
# micro-batch of queries stays under it (64 queries of 16 tokens), documents being
# indexed (64 records of ~60 tokens) go over.
MULTI_THREAD_TOKENS = 1024


def package_root() -> Path:
    """The directory `services` is imported from: the child imports this module from there."""
    return Path(services.__file__).resolve().parent.parent


class EncoderProcessDied(Unavailable):
    """The child process ended; the next call starts another (callers see UNAVAILABLE)."""


def _serve(
    requests: Connection, replies: Connection, config: ModelConfig, device: str, precision: str
) -> None:
    """The child: load the model, then answer ("encode" | "count_tokens", args, kwargs)."""
    from services.kernel.embedding.encoder import Encoder

    try:
        encoder = Encoder(config, device, precision, one_thread_below_tokens=MULTI_THREAD_TOKENS)
    except ModelLoadError as exc:  # the parent raises it as ModelLoadError
        replies.send(("error", str(exc)))
        return
    except Exception as exc:
        replies.send(("error", f"cannot load the model in {config.path}: {exc!r}"))
        return
    replies.send(("ready", (encoder.device, encoder.dtype)))
    while True:
        try:
            op, args, kwargs = requests.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        try:
            if op == "encode":
                result: Any = encoder.encode(*args, **kwargs)
            elif op == "count_tokens":
                result = encoder.count_tokens(*args)
            else:
                raise ValueError(f"unknown operation {op!r}")
        except Exception as exc:  # sent back as (type name, message): always picklable
            replies.send(("failed", (type(exc).__name__, str(exc))))
            continue
        replies.send(("ok", result))


class EncoderProcess:
    """The Encoder interface (`encode`, `count_tokens`, `config`, `device`, `dtype`) backed
    by a child process. Thread-safe: one request at a time goes down the pipe."""

    def __init__(self, config: ModelConfig, device: str = "auto", precision: str = "auto") -> None:
        self.config = config
        self._device, self._precision = device, precision
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._requests: Any = None
        self._replies: Any = None
        self.device, self.dtype = self._start()

    def encode(
        self, texts: list[str], *, max_length: int, normalize: bool, batch_size: int = 64
    ) -> Encoded:
        result: Encoded = self._call(
            "encode", texts, max_length=max_length, normalize=normalize, batch_size=batch_size
        )
        return result

    def count_tokens(self, texts: list[str]) -> list[int]:
        counts: list[int] = self._call("count_tokens", texts)
        return counts

    def close(self) -> None:
        with self._lock:
            self._stop()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> tuple[str, str]:
        # A fresh interpreter (`python -m` this module), not multiprocessing's spawn, which
        # re-imports the parent's main script in the child. Two pipes of its own carry
        # pickled requests and replies; stdout and stderr stay the service's.
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        root = str(package_root())
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(request_read), str(reply_write)],
                pass_fds=(request_read, reply_write),
                env=env,
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
        requests = Connection(request_write, readable=False)
        replies = Connection(reply_read, writable=False)
        try:
            requests.send((self.config, self._device, self._precision))
            kind, payload = replies.recv()
        except (EOFError, OSError):
            requests.close()
            replies.close()
            code = process.wait(timeout=30)
            raise ModelLoadError(
                f"the embedding process for {self.config.name} exited while loading "
                f"{self.config.path} (exit code {code}; its error is in the service's log)"
            ) from None
        if kind == "error":
            requests.close()
            replies.close()
            process.wait(timeout=30)
            raise ModelLoadError(payload)
        self._process, self._requests, self._replies = process, requests, replies
        device, dtype = payload
        return str(device), str(dtype)

    def _call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            if self._process is None:  # the last one died: start another
                log.warning("restarting the embedding process for %s", self.config.name)
                try:
                    self._start()
                except ModelLoadError as exc:
                    raise Unavailable(f"the embedding process cannot be restarted: {exc}") from exc
            try:
                self._requests.send((op, args, kwargs))
                kind, payload = self._replies.recv()
            except (EOFError, OSError, BrokenPipeError):
                code = self._stop()
                raise EncoderProcessDied(
                    f"the embedding process for {self.config.name} ended (exit code {code}) "
                    "during the request; the next request starts a new one"
                ) from None
        if kind == "failed":
            name, message = payload
            raise RuntimeError(f"embedding failed in the model process: {name}: {message}")
        return payload

    def _stop(self) -> int | None:
        """End the child (it exits when its request pipe closes); its exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        self._requests.close()
        self._replies.close()
        try:
            return int(process.wait(timeout=10))
        except subprocess.TimeoutExpired:
            process.kill()
            return int(process.wait(timeout=10))


def main(request_fd: int, reply_fd: int) -> None:
    requests = Connection(request_fd, writable=False)
    replies = Connection(reply_fd, readable=False)
    config, device, precision = requests.recv()
    _serve(requests, replies, config, device, precision)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
