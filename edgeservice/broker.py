"""The edge's MQTT broker: the configured one (Mosquitto) when reachable, else an embedded one.

A broker serves one node, as in KubeEdge, where each node's EdgeCore has its own (a Mosquitto on the box,
or the internal one): devicetwin subscribes to ``$hw/events/device/+/...`` and answers every device id
it does not hold with an ``unknown device`` refusal, so two edges on one broker would refuse each other's
devices. :class:`NodeBroker` is that one broker of a node: resolved once, on first use (the node's first
device or the first container Edged starts), shared by devicetwin and advertised to every container as
``FLEETOPS_MQTT_URL`` (:data:`app.twin.MQTT_URL_ENV`), which the workloads use when their config names
no broker.
The embedded broker keeps its port across restarts of the edge when it can (the caller passes the port it
had), so pods that kept running still reach it.

KubeEdge's EdgeCore talks to device adapters over MQTT, normally through an external Mosquitto
("external mode"), and can run an internal broker. FleetOps does the same: :func:`ensure_broker` takes
the configured URL (``tcp://HOST:PORT``), checks that something accepts TCP connections there, and uses
it; when no URL is given or the broker is unreachable, it starts an :class:`EmbeddedBroker` on loopback
and says so in the log, so ``make demo`` works on a fresh machine without a broker installed.

Choice of the embedded broker (checked with experiments against aiomqtt 2.5.1, next to Mosquitto 2):

* ``amqtt`` 0.12.1 (MIT, pure Python): its metadata pins ``websockets==15.0.1``, which would downgrade
  FleetOps' ``websockets==17.4`` (the hub tunnel); installed apart (``pip install --target``) and run as
  a child it works, but refuses by design any client publish to a ``$`` topic and closes that client's
  connection (since 0.11.2), and it delivers a QoS 0 publish at QoS 1.
* ``iotcore`` 0.4.0 (MIT, rumqttd compiled into a wheel, no Python dependencies): starts in 0.15 s and
  stops cleanly, but rumqttd drops the connection of any client that subscribes or publishes to a topic
  starting with ``$`` (the reserved ``$SYS`` space), and every KubeEdge topic starts with ``$hw`` or
  ``$ke``. Also seen: QoS 0 delivered at QoS 1 (MQTT 3.1.1 section 3.8.4 asks min(publish,
  subscription)) and a 20 KiB payload limit enforced by resetting the connection.
* ``moat-mqtt`` (LGPL): the release pip picks on Python 3.11 fails to import; on 3.12 it upgrades QoS 0
  to 1 and stopped delivering for good after ~10,000 messages of a burst. ``moat-lib-mqtt`` is correct
  but speaks MQTT 5 only (3.1.1 adapters could not connect); ``mqttd`` corrupted QoS 1 payloads and
  retained messages; ``hbmqtt`` does not import on Python 3.11. No PyPI package ships mosquitto.
* So, as planned for that case, :class:`EmbeddedBroker` runs the ``mosquitto`` binary (EPL-2.0/EDL-1.0,
  packaged by every distribution; the .deb declares it as a dependency) as a child process with a
  generated config: a loopback listener, anonymous access, no persistence. It is the same broker as in
  production and CI, so behaviour (QoS downgrade rules, retained messages, ``$`` topics) does not
  depend on which one the edge got. It starts in about 50 ms; ``stop()`` sends SIGTERM, on which
  mosquitto disconnects its clients and exits, and kills it after :data:`STOP_GRACE` seconds. The
  project's set-up (``make install``, ``scripts/system-deps``) installs the package with apt-get where it
  is missing, so a fresh machine has it.

Deliberately not done: authentication and TLS on the embedded broker (it binds loopback only, which is
where adapters on the same box connect), persistence across restarts, and checking that the configured
URL speaks MQTT rather than merely accepting TCP (the event bus's own reconnect loop reports that).

The child's life is tied to the edge's with ``PR_SET_PDEATHSIG`` on Linux: the systemd unit uses
``KillMode=process`` so that pods outlive an edge restart, and a broker left behind by a killed edge would
hold the node's port, so the restarted edge would start a second one elsewhere while the pods still
talked to the first. With the broker gone, the restarted edge starts it again on the advertised port and
the workloads' MQTT sessions reconnect to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from edgeservice.errors import EdgeError

log = logging.getLogger(__name__)

# MQTT's registered port, used when the URL names none.
DEFAULT_PORT = 1883
# How long a reachability probe of the configured broker may take: loopback or LAN answers in
# milliseconds, and the edge should not hang at start on a black-holed address.
PROBE_TIMEOUT = 2.0
# Seconds mosquitto gets to start listening (it takes ~50 ms) and to exit after SIGTERM.
START_TIMEOUT = 10.0
STOP_GRACE = 5.0
_POLL = 0.02  # seconds between readiness probes while mosquitto starts
# Attempts at binding a free port: the port picked by binding 0 is released before mosquitto binds it,
# so another process can take it in between (rare; a retry picks another).
_START_ATTEMPTS = 3
_SCHEMES = ("tcp", "mqtt")
# Debian and Ubuntu install the broker in /usr/sbin, which is not on every user's PATH.
_EXTRA_DIRS = ("/usr/sbin", "/usr/local/sbin")


class BrokerError(EdgeError):
    """Root of the errors about the MQTT broker."""


class BrokerUrlError(BrokerError):
    """A broker URL that is not ``tcp://HOST[:PORT]``."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"broker URL {url!r}: {message}")
        self.url = url
        self.message = message


class BrokerStartError(BrokerError):
    """The embedded broker could not be started."""

    def __init__(self, host: str, port: int, message: str) -> None:
        super().__init__(f"embedded MQTT broker on {host}:{port}: {message}")
        self.host = host
        self.port = port
        self.message = message


def parse_url(url: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` (or ``mqtt://``) to ``(host, port)``; the port defaults to 1883."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BrokerUrlError(url, str(exc)) from exc
    if parts.scheme not in _SCHEMES:
        raise BrokerUrlError(url, f"scheme must be one of {', '.join(_SCHEMES)}")
    if not parts.hostname:
        raise BrokerUrlError(url, "a host is required")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise BrokerUrlError(url, "only tcp://HOST:PORT is supported")
    return parts.hostname, DEFAULT_PORT if port is None else port


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (a readiness probe alone would take another process's
    listener there for our broker)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as mosquitto binds: TIME_WAIT is free
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def find_mosquitto() -> str | None:
    """The mosquitto binary: on PATH, else in the sbin directories distributions install it in."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *_EXTRA_DIRS])
    return shutil.which("mosquitto", path=path)


async def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether something accepts TCP connections on ``host:port`` within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # no passwd entry (a container's arbitrary uid): mosquitto changes no user then
        return "root" if os.geteuid() == 0 else str(os.geteuid())


def _die_with_us(argv: list[str]) -> list[str]:
    """``argv`` run so that it gets SIGTERM when this process dies: through util-linux's ``setpriv
    --pdeathsig``, which sets the parent-death signal and then execs it (the kernel keeps the setting
    across exec, though not across a change of credentials: see the ``user`` line of the config). Doing
    it in a pre-exec hook instead would run Python code between fork and exec in a process with threads.
    Without setpriv (not Linux), ``argv`` as it is."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return argv
    return [setpriv, "--pdeathsig", "TERM", "--", *argv]


class EmbeddedBroker:
    """mosquitto, as our child process, on ``host:port``; ``port=0`` picks a free port at the first start
    and keeps it, so ``stop()`` then ``start()`` comes back on the same address."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._proc: asyncio.subprocess.Process | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> None:
        if self.running:
            return
        binary = find_mosquitto()
        if binary is None:
            raise BrokerStartError(
                self.host, self.port, "no mosquitto binary (install the mosquitto package)"
            )
        pick = self.port == 0
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _free_port(self.host) if pick else self.port
            if not pick and not _port_free(self.host, port):
                raise BrokerStartError(self.host, port, "the port is in use")
            try:
                await self._spawn(binary, port)
            except BrokerStartError as exc:
                if pick and attempt < _START_ATTEMPTS:
                    log.warning("embedded MQTT broker: %s; trying another port", exc)
                    continue
                raise
            self.port = port
            log.info("embedded MQTT broker (%s) listening on %s", binary, self.url)
            return

    async def _spawn(self, binary: str, port: int) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="fleetops-mqtt-")
        work = Path(self._dir.name)
        conf = work / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {self.host}\n"
            # Run as the edge's own user: mosquitto started as root otherwise switches to its own user,
            # and that change of credentials clears the parent-death signal (see _die_with_us).
            f"user {_user_name()}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # Twin updates are small packets, one at a time: without this, Nagle's algorithm and the
            # peer's delayed ACK hold each one ~40 ms at every hop through the broker.
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n",
            encoding="utf-8",
        )
        errlog = work / "mosquitto.log"
        with errlog.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                *_die_with_us([binary, "-c", str(conf)]),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        self._proc = proc
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while proc.returncode is None and time.monotonic() < deadline:
                if await reachable(self.host, port, timeout=START_TIMEOUT):
                    return
                await asyncio.sleep(_POLL)
        except BaseException:  # cancelled while waiting: the caller never gets a broker to stop
            self._kill_now()
            raise
        await self.stop()
        tail = errlog.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        why = f"exited with {proc.returncode}" if proc.returncode is not None else "did not listen in time"
        raise BrokerStartError(self.host, port, f"mosquitto {why}: {' | '.join(tail)}")

    def _kill_now(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()  # asyncio's child watcher reaps it
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(STOP_GRACE):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.info("embedded MQTT broker on %s stopped", self.url)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


async def ensure_broker(url: str | None, *, port: int = 0) -> tuple[str, EmbeddedBroker | None]:
    """The broker URL to use, and the embedded broker started for it (the caller stops it), or ``None``
    when the configured broker at ``url`` is reachable. The embedded broker listens on ``port`` when it
    is free (0, or a taken one: any free port). Raises BrokerUrlError for a malformed URL and
    BrokerStartError when the embedded broker cannot start."""
    if url:
        host, port = parse_url(url)
        if await reachable(host, port):
            log.info("using MQTT broker %s", url)
            return url, None
        log.warning("MQTT broker %s is unreachable; starting an embedded broker instead", url)
    else:
        log.info("no MQTT broker configured; starting an embedded broker")
    if port:
        broker = EmbeddedBroker(port=port)
        try:
            await broker.start()
        except BrokerStartError as exc:
            log.warning("%s; picking another port", exc)
        else:
            return broker.url, broker
    broker = EmbeddedBroker()
    await broker.start()
    return broker.url, broker


class NodeBroker:
    """The MQTT broker of one node (see the module docstring): ``configured`` (``--mqtt``) when reachable,
    else an embedded one, on ``port`` when free. :meth:`resolve` settles it once, however many callers
    ask at the same time; :meth:`stop` stops an embedded one."""

    def __init__(
        self,
        configured: str | None,
        *,
        port: int = 0,
        on_resolved: Callable[[str], None] | None = None,
    ) -> None:
        """``on_resolved(url)`` is told the URL once it is settled (the edge advertises it)."""
        self.configured = configured
        self.port = port
        self.on_resolved = on_resolved
        self.url: str | None = None  # once resolved
        self.embedded: EmbeddedBroker | None = None
        self._settling: asyncio.Task[str] | None = None

    async def resolve(self) -> str:
        """The node's broker URL, starting the embedded broker if it is needed; raises BrokerError.
        The work is one task that every caller waits on, shielded: a caller that is cancelled (a pod
        deleted while it starts) neither aborts it for the others nor leaves a broker nobody stops."""
        if self.url is not None:
            return self.url
        task = self._settling
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._settling = asyncio.create_task(self._settle(), name="node-broker.resolve")
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, whoever waits
        return await asyncio.shield(task)

    async def _settle(self) -> str:
        url, embedded = await ensure_broker(self.configured, port=self.port)
        self.url, self.embedded = url, embedded
        if embedded is not None:
            self.port = embedded.port  # a later resolve (after stop) comes back on it
        if self.on_resolved is not None:
            self.on_resolved(url)
        return url

    async def stop(self) -> None:
        task, self._settling = self._settling, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, BrokerError):
                await task
        embedded, self.embedded = self.embedded, None
        self.url = None
        if embedded is not None:
            await embedded.stop()
