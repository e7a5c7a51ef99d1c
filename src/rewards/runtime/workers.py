"""The worker processes of ``rewards serve``: one listening socket per worker.

uvicorn's supervisor hands every worker the same listening socket. Under keep-alive
load the first worker to wake accepts most connections and keeps them, and the other
idles (measured: 16 wrk connections, 2 workers, one worker at 100% CPU and the other at
5%). Here each worker slot gets a socket of its own on the same port with
``SO_REUSEPORT``: the kernel spreads new connections over the slots. The supervisor
creates the sockets and keeps them open, so connections that arrive while a worker is
being replaced (it restarts itself after reloads to give back the engine's memory) wait
in its slot's backlog for the new worker. Sockets are created with ``IPPROTO_TCP``:
asyncio sets ``TCP_NODELAY`` only on sockets whose protocol says TCP, and without it
small answers stall ~40 ms behind delayed ACKs.
"""

from __future__ import annotations

import socket

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger

BACKLOG = 2048


def slot_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket that shares ``host:port`` with the other slots."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def refuse_if_taken(host: str, port: int) -> None:
    """``SO_REUSEPORT`` would let a second server on the same port share the traffic
    silently: bind once without it first, so a taken port fails as "address in use"."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))


class SpreadWorkers(Multiprocess):
    """uvicorn's supervisor (signals, health checks, restarts), each worker on the
    socket of its own slot instead of one shared socket."""

    def __init__(self, config: Config, host: str, port: int) -> None:
        refuse_if_taken(host, port)
        self.host, self.port = host, port
        self.slots = [slot_socket(host, port) for _ in range(config.workers)]
        super().__init__(config, sockets=self.slots)

    def _start(self, slot: int) -> Process:
        process = Process(self.config, [self.slots[slot]])
        process.start()
        return process

    def init_processes(self) -> None:
        self.processes = [self._start(slot) for slot in range(self.processes_num)]

    def restart_all(self) -> None:
        """Each worker replaced in turn, the new one serving before the old one stops."""
        for slot, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._start(slot)
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[slot] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for slot, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Worker [{process.pid}] failed to start; stopping.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Worker [{process.pid}] exited; starting its replacement")
            self.processes[slot] = self._start(slot)

    def handle_ttin(self) -> None:
        """SIGTTIN: one more worker, on a slot socket of its own."""
        self.processes_num += 1
        self.slots.append(slot_socket(self.host, self.port))
        self.processes.append(self._start(len(self.slots) - 1))

    def handle_ttou(self) -> None:
        """SIGTTOU: one worker fewer, its slot socket closed (else the kernel would keep
        giving it connections nobody accepts)."""
        if self.processes_num <= 1:
            return
        self.processes_num -= 1
        process = self.processes.pop()
        self.slots.pop().close()
        process.terminate()
        process.join()

    def run(self) -> None:
        try:
            super().run()
        finally:
            for sock in self.slots:
                sock.close()
