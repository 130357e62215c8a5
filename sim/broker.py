"""A private MQTT broker for tests and demos: mosquitto when installed, else amqtt in-process.

``PrivateBroker`` is an async context manager. Entering it picks a free port on 127.0.0.1 and
starts the broker with persistence on, so ``stop()`` followed by ``start()`` brings back the
same broker (same port, same persistence file, queued messages for persistent sessions intact).
``kill()`` sends SIGKILL to mosquitto, the way a crash or power loss would end it.

mosquitto runs as a child process with a generated config (anonymous access, a large queue,
no message size limit). When ``shutil.which("mosquitto")`` finds nothing and mosquitto was not
demanded, the pure-Python ``amqtt`` broker (optional extra ``embedded-broker``) runs in this
event loop instead, with a warning: it is slower and its MQTT 5 support is partial.

Readiness is checked by polling the port with a deadline, never by sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import importlib
import logging
import secrets
import shutil
import signal
import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

from device.mqtt.settings import BrokerSettings, ProtocolName, parse_broker_url
from protocol.errors import BwcError

log = logging.getLogger(__name__)

BrokerKind = Literal["mosquitto", "amqtt"]

_HOST = "127.0.0.1"
PRIVATE_MAX_PACKET_SIZE: Final = 4 * 1024 * 1024
"""The maximum packet size the private mosquitto announces: room for 1 MiB upload chunks."""


class BrokerError(BwcError):
    """The private broker could not be started or stopped (the environment's fault)."""


def free_port(host: str = _HOST) -> int:
    """Return a TCP port on ``host`` that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for_port(host: str, port: int, *, timeout_s: float) -> None:
    """Poll until ``host:port`` accepts a TCP connection; ``BrokerError`` after ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: OSError | None = None
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            last = exc
            await asyncio.sleep(0.01)  # a poll interval, not a guess at readiness
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return
    raise BrokerError(
        f"broker on {host}:{port} did not accept connections in {timeout_s} s: {last}"
    )


def mosquitto_config(
    port: int,
    data_dir: Path,
    *,
    persistence: bool = True,
    max_packet_size: int | None = PRIVATE_MAX_PACKET_SIZE,
    extra: Sequence[str] = (),
) -> str:
    """The mosquitto 2.x config text for a private anonymous broker on ``port``.

    ``max_packet_size`` is announced to MQTT 5 clients (None: no limit, none announced); by
    default 4 MiB, so a device knows 1 MiB upload chunks fit (without an announcement it assumes
    128,000 bytes, docs/protocol.md "Message size"). ``extra`` lines are appended (e.g.
    ``message_size_limit 4096`` to test an unannounced limit).
    """
    packet_limit = [] if max_packet_size is None else [f"max_packet_size {max_packet_size}"]
    return "\n".join(
        [
            f"listener {port} {_HOST}",
            "allow_anonymous true",
            # As root, mosquitto drops to user "mosquitto", which cannot write our temp dir.
            f"user {getpass.getuser()}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {data_dir}/",
            "persistence_file broker.db",
            "autosave_interval 1",
            "max_queued_messages 100000",
            "max_queued_bytes 0",
            "max_inflight_messages 0",  # no message_size_limit: deprecated, and 0 by default
            "log_type error",
            "log_type warning",
            "log_dest stderr",
            *packet_limit,
            *extra,
            "",
        ]
    )


class PrivateBroker:
    """A broker on a free 127.0.0.1 port that lives for one ``async with`` block.

    ``kind`` forces a backend; ``None`` picks mosquitto when installed, else amqtt.
    ``persistence=False`` makes a restart lose every session (to test re-subscription);
    ``max_packet_size`` is the limit mosquitto announces (None: none); ``extra_config`` lines go
    into mosquitto's config as they are.
    """

    def __init__(
        self,
        *,
        kind: BrokerKind | None = None,
        data_dir: Path | None = None,
        start_timeout_s: float = 10.0,
        persistence: bool = True,
        max_packet_size: int | None = PRIVATE_MAX_PACKET_SIZE,
        extra_config: Sequence[str] = (),
    ) -> None:
        if kind is None:
            kind = "mosquitto" if shutil.which("mosquitto") else "amqtt"
        self.kind: BrokerKind = kind
        self.port = free_port()
        self._start_timeout_s = start_timeout_s
        self._persistence = persistence
        self._max_packet_size = max_packet_size
        self._extra_config = tuple(extra_config)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._data_dir = data_dir
        self._proc: asyncio.subprocess.Process | None = None
        self._amqtt: Any = None
        self.username: str | None = None
        """Credentials clients must give (amqtt only; the private mosquitto is anonymous)."""
        self.password: str | None = None
        if kind == "amqtt":
            # amqtt drops the queued QoS 1 messages of anonymous clients with persistent
            # sessions, so the embedded broker requires a login, fresh for every broker.
            self.username, self.password = "bwc-sim", secrets.token_urlsafe(24)

    def settings(self, *, protocol: ProtocolName | None = None, **options: Any) -> BrokerSettings:
        """Settings for a client of this broker: its URL, credentials, and MQTT 5 when it has it.

        ``options`` go to ``device.mqtt.parse_broker_url`` (``backoff``, ``connect_timeout_s``).
        """
        if protocol is None:
            protocol = "5" if self.kind == "mosquitto" else "3.1.1"
        return parse_broker_url(
            self.url, username=self.username, password=self.password, protocol=protocol, **options
        )

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``, ready for ``device.mqtt.parse_broker_url``."""
        return f"mqtt://{_HOST}:{self.port}"

    @property
    def host(self) -> str:
        """The address the broker listens on."""
        return _HOST

    @property
    def running(self) -> bool:
        """Whether the broker is currently started."""
        return self._proc is not None or self._amqtt is not None

    async def __aenter__(self) -> Self:
        if self._data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bwc-broker-")
            self._data_dir = Path(self._tmp.name)
        try:
            await self.start()
        except BaseException:
            self._cleanup_tmp()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.stop()
        finally:
            self._cleanup_tmp()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def start(self) -> None:
        """Start (or restart) the broker on the same port with the same persistence file."""
        if self.running:
            raise BrokerError("broker already running")
        if self._data_dir is None:
            raise BrokerError("use PrivateBroker as an async context manager")
        if self.kind == "mosquitto":
            await self._start_mosquitto(self._data_dir)
        else:
            await self._start_amqtt()
        await wait_for_port(_HOST, self.port, timeout_s=self._start_timeout_s)

    async def stop(self) -> None:
        """Stop the broker gracefully (mosquitto saves its persistence file on SIGTERM)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await self._reap(proc)
        if self._amqtt is not None:
            broker, self._amqtt = self._amqtt, None
            await broker.shutdown()

    async def kill(self) -> None:
        """End the broker abruptly (SIGKILL for mosquitto; amqtt can only shut down)."""
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.returncode is None:
                proc.kill()
            await self._reap(proc)
        else:
            await self.stop()

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        try:
            async with asyncio.timeout(self._start_timeout_s):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()

    async def _start_mosquitto(self, data_dir: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise BrokerError("mosquitto is not installed")
        conf = data_dir / "mosquitto.conf"
        text = mosquitto_config(
            self.port,
            data_dir,
            persistence=self._persistence,
            max_packet_size=self._max_packet_size,
            extra=self._extra_config,
        )
        conf.write_text(text, encoding="utf-8")
        # The broker's own messages (errors, warnings, "should not be run as root") go to a log
        # in its directory rather than over the user's terminal.
        with (data_dir / "mosquitto.log").open("ab") as log_file:
            self._proc = await asyncio.create_subprocess_exec(
                binary,
                "-c",
                str(conf),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
                # Its own session: a Ctrl-C at the terminal must reach us, not kill the broker
                # under the camera and receiver that are still shutting down through it.
                start_new_session=True,
            )

    def _password_file(self) -> Path:
        """amqtt's password file (``user:argon2 hash``) for ``username``, in the data dir."""
        if self._data_dir is None or self.username is None or self.password is None:
            raise BrokerError("the amqtt broker has no data directory or credentials")
        path = self._data_dir / "amqtt.passwd"
        # amqtt's own hashing library, imported with amqtt only when the fallback is used.
        from pwdlib import PasswordHash  # noqa: PLC0415
        from pwdlib.hashers.argon2 import Argon2Hasher  # noqa: PLC0415

        digest = PasswordHash((Argon2Hasher(),)).hash(self.password)
        path.write_text(f"{self.username}:{digest}\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    async def _start_amqtt(self) -> None:
        log.warning(
            "mosquitto not found: using the embedded amqtt broker (slower, partial MQTT 5, "
            "no persistence across restarts); install mosquitto for realistic runs"
        )
        try:
            amqtt_broker = importlib.import_module("amqtt.broker")  # optional extra, lazily
        except ImportError as exc:
            raise BrokerError(
                "neither mosquitto nor amqtt is available: install mosquitto, "
                "or pip install 'bwc-sim[embedded-broker]'"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{_HOST}:{self.port}"}},
            "auth": {
                "allow-anonymous": False,
                "plugins": ["auth_file"],
                "password-file": str(self._password_file()),
            },
            "topic-check": {"enabled": False},
        }
        # amqtt warns about every connection that sends no CONNECT, such as the readiness probe
        # below: quiet it unless the user asked for debug logs.
        amqtt_log = logging.getLogger("amqtt")
        if not amqtt_log.isEnabledFor(logging.DEBUG):
            amqtt_log.setLevel(logging.ERROR)
        broker = amqtt_broker.Broker(config)
        await broker.start()
        self._amqtt = broker
