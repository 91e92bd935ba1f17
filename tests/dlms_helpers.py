"""A plain-socket exchange for the DLMS client loop, and the simulator's expected values, for the DLMS tests."""

from __future__ import annotations

import asyncio
from typing import Any

from pollerd.drivers.dlms_client import DlmsClient
from pollerd.protocols.dlms.hdlc import LinkParams, ServerAddress
from pollerd.protocols.dlms.session import ClientSession, SessionConfig


class SocketExchange:
    """exchange(request, framer, shown) over one TCP connection; counts bytes both ways."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 3.0) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        self.sent = 0
        self.received = 0
        self.requests: list[bytes] = []
        self.shown: list[str] = []

    async def __call__(self, data: bytes, framer: Any, shown: str | None) -> Any:
        self.requests.append(data)
        self.shown.append(shown if shown is not None else data.hex(" "))
        self.writer.write(data)
        self.sent += len(data)
        while True:
            chunk = await asyncio.wait_for(self.reader.read(4096), self.timeout)
            if not chunk:
                raise ConnectionError("simulator closed the connection")
            self.received += len(chunk)
            unit = framer.feed(chunk)
            if unit is not None:
                return unit

    def close(self) -> None:
        self.writer.close()


async def connect(port: int, *, framing: str = "hdlc", physical: int = 17, client_sap: int = 16,
                  password: bytes | None = None, max_info: int = 128, max_pdu: int = 0xFFFF,
                  size: int = 4) -> tuple[DlmsClient, SocketExchange]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    ex = SocketExchange(reader, writer)
    cfg = SessionConfig(framing, ServerAddress(1, physical, size), client_sap, password, max_pdu,
                        LinkParams(max_info, max_info, 1, 1))
    return DlmsClient(ClientSession(cfg), ex), ex
