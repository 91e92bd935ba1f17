"""The DLMS/COSEM client loop over an injected exchange: link, association, GET/SET with block transfer.

The byte pipe is not known here: ``exchange(request, framer, shown)`` sends ``request`` and returns one
reply unit (an HDLC frame or a wrapper PDU). The driver passes the line's exchange (one bus discipline with
every other protocol); tests and tools may pass a plain socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..protocols.dlms import acse, axdr, xdlms
from ..protocols.dlms.errors import HdlcError
from ..protocols.dlms.session import ClientSession, HdlcFramer, WrapperFramer
from ..protocols.dlms.xdlms import Attr, DataAccessFailure

__all__ = ["DlmsClient", "Exchange"]

Framer = HdlcFramer | WrapperFramer
Exchange = Callable[[bytes, Framer, str | None], Awaitable[Any]]


class DlmsClient:
    def __init__(self, session: ClientSession, exchange: Exchange) -> None:
        self.session = session
        self._exchange = exchange
        self.exchanges = 0          # request/reply round trips on the wire (the bench counts them)

    async def _unit(self, data: bytes, framer: Framer, shown: str | None = None) -> Any:
        self.exchanges += 1
        return await self._exchange(data, framer, shown)

    async def transact(self, apdu: bytes, shown: str | None = None, answer: str | None = None) -> bytes:
        """Send one APDU (segmented as needed) and return the reply APDU (reassembled)."""
        framer = self.session.framer(answer)
        out: bytes | None = self.session.send(apdu)
        while out is not None:
            # A redacted form (the AARQ without its password) stands for every segment of the request: a
            # later segment may carry the password, and the line shows `shown` in errors and logs.
            unit = await self._unit(out, framer, shown)
            out, reply = self.session.on_unit(unit)
            if reply is not None:
                return reply
        raise HdlcError("a frame without the poll/final bit although the window is 1")

    async def open(self) -> None:
        """Link (SNRM/UA for HDLC) and association (AARQ/AARE). Raises AssociationRejected with the reason."""
        snrm = self.session.open_request()
        if snrm is not None:
            framer = self.session.framer("snrm")
            self.session.on_open(await self._unit(snrm, framer))
        reply = await self.transact(self.session.aarq(), shown=self.session.shown_aarq(), answer="aarq")
        self.session.on_aare(reply)

    async def close(self) -> None:
        """RLRQ then DISC, best effort: a meter that has already dropped the link answers neither."""
        try:
            if self.session.associated:
                await self.transact(acse.encode_rlrq())
        finally:
            disc = self.session.close_request()
            if disc is not None:
                await self._unit(disc, self.session.framer())

    async def get(self, attr: Attr, access: tuple[int, bytes] | None = None) -> Any:
        """One attribute's value; a long one continues block by block. Raises DataAccessError if refused."""
        invoke = self.session.next_invoke()
        resp = xdlms.parse_get_response(await self.transact(xdlms.encode_get(invoke, attr, access)), invoke)
        if resp.kind == xdlms.NORMAL:
            value = resp.results[0]
            if isinstance(value, DataAccessFailure):
                raise value.error(f"GET {attr}")
            return value
        collector = xdlms.BlockCollector(invoke)
        while True:
            nxt = collector.add(resp)
            if nxt is None:
                return collector.value()
            resp = xdlms.parse_get_response(await self.transact(nxt), invoke)
            if resp.kind != xdlms.NEXT:
                raise HdlcError(f"GET-Response type {resp.kind} in the middle of a block transfer")

    async def get_list(self, attrs: list[Attr]) -> list[Any]:
        """Several attributes in one GET-with-list: values, or DataAccessFailure per refused item."""
        invoke = self.session.next_invoke()
        req = xdlms.encode_get_list(invoke, [(a, None) for a in attrs])
        resp = xdlms.parse_get_response(await self.transact(req), invoke)
        if resp.kind == xdlms.NEXT:
            raise HdlcError("GET-with-list answered with data blocks; ask for fewer attributes at once")
        if len(resp.results) != len(attrs):
            raise HdlcError(f"GET-with-list of {len(attrs)} answered with {len(resp.results)} results")
        return resp.results

    async def set(self, attr: Attr, value: Any) -> None:
        invoke = self.session.next_invoke()
        result = xdlms.parse_set_response(await self.transact(xdlms.encode_set(invoke, attr, axdr.encode(value))),
                                          invoke)
        if result:
            raise DataAccessFailure(result).error(f"SET {attr}")
