"""Modbus driver (RTU on serial lines, Modbus TCP, RTU over TCP): reads a register map into readings.

Byte layouts live in :mod:`pollerd.protocols.modbus`, register maps and the read planner in
:mod:`pollerd.protocols.modbus_map`. This module runs the planned reads, retries timeouts and bad frames
with the meter's ``retries``, and learns from the device: a merged read refused with "illegal data
address" is split and the split is kept for this meter; a single value the device refuses is dropped from
the plan (logged once) so that one missing register does not fail every cycle.
"""

from __future__ import annotations

from ..errors import FrameError, LineStopping, MeterError, PollerdError, ReplyTimeout, TransportError
from ..model import Archive, Reading
from ..protocols import modbus as mb
from ..protocols.modbus_map import Block, ModbusOptions, plan_reads, split_block
from .base import BusDriverContext, PollResult

_RETRYABLE = (ReplyTimeout, FrameError)
# Exception codes on which a merged read is split: 02 is the standard answer to a read over an unmapped
# hole; some meters answer 03 (illegal data value) to a read that crosses their internal block boundary.
_SPLIT_ON = frozenset((0x02, 0x03))
# A TCP gateway's own answers when the unit behind it is silent or unreachable.
_GATEWAY_NO_ANSWER = frozenset((0x0A, 0x0B))


class ModbusDriver:
    def __init__(self, ctx: BusDriverContext) -> None:
        self.ctx = ctx
        mc = ctx.meter
        opts = mc.options if isinstance(mc.options, ModbusOptions) else ModbusOptions()
        self.options = opts
        self.unit = int(mc.connection_address)
        self.blocks: list[Block] = plan_reads(opts.registers, mc.package_size, opts.max_gap)
        self.dropped: list[str] = []       # values the device refused one by one (channel @ reference)
        self._tid = 0
        if opts.mode == "tcp" and ctx.line.cfg.type == "serial":
            ctx.log.warning("%s: modbus_mode \"tcp\" on serial line %s: MBAP frames on a serial bus will not "
                            "be understood; use \"rtu\"", mc.name, mc.line)
        if opts.mode != "tcp" and self.unit > 247:
            ctx.log.warning("%s: unit id %d is reserved on RTU buses (1..247); only Modbus TCP devices answer "
                            "there", mc.name, self.unit)
        if any(v is not None for v in (mc.tn1, mc.tn2, mc.tt)):
            ctx.log.warning("%s: tn1/tn2/tt are not applied to Modbus values; use scale in the register map",
                            mc.name)
        m = ctx.metrics
        self._m_exc = m.counter("pollerd_modbus_exceptions_total", "Modbus exception replies, by meter and code",
                                ("meter", "code"))
        self._m_split = m.counter("pollerd_modbus_read_splits_total",
                                  "Merged Modbus reads split after the device refused them", ("meter",))
        self._m_noise = m.counter("pollerd_modbus_noise_bytes_total",
                                  "Bytes skipped before a Modbus reply (line noise, adapter echo)", ("meter",))
        self._m_stale = m.counter("pollerd_modbus_stale_replies_total",
                                  "Modbus TCP replies with an old transaction id, dropped", ("meter",))

    # -- exchanges -------------------------------------------------------------------------------------

    def _frame(self, req: mb.Request) -> tuple[bytes, mb.RtuReplyFramer | mb.MbapReplyFramer]:
        if self.options.mode == "tcp":
            self._tid = (self._tid + 1) & 0xFFFF
            return mb.encode_mbap(req, self._tid), mb.MbapReplyFramer(req, self._tid)
        frame = mb.encode_rtu(req)
        return frame, mb.RtuReplyFramer(req, frame)

    async def request(self, req: mb.Request, *, retries: int | None = None, priority: bool = False) -> mb.Reply:
        """One request with retries on timeouts and bad frames; returns the checked reply, raises
        :class:`~pollerd.protocols.modbus.ModbusException` for an exception reply. Also the entry point
        for raw/admin requests (writes 05/06/15/16), which should pass ``retries=0``."""
        mc = self.ctx.meter
        attempts = 1 + (mc.retries if retries is None else retries)
        last: PollerdError | None = None
        for _ in range(attempts):
            data, framer = self._frame(req)
            try:
                reply = await self.ctx.line.exchange(data, framer, waiting_time=mc.waiting_time,
                                                     pause=mc.pause_time, meter=mc.name, priority=priority)
            except _RETRYABLE as exc:
                last = exc
                continue
            finally:
                self._account(framer)
            if reply.exception is not None:
                self._m_exc.inc(meter=mc.name, code=f"{reply.exception:02X}")
            return reply.check()
        assert last is not None
        raise last

    def _account(self, framer: mb.RtuReplyFramer | mb.MbapReplyFramer) -> None:
        name = self.ctx.meter.name
        if isinstance(framer, mb.MbapReplyFramer) and framer.stale:
            self._m_stale.inc(framer.stale, meter=name)
            self.ctx.log.warning("%s: dropped %d late reply(ies) to earlier requests: %s", name, framer.stale,
                                 framer.skipped.hex(" "))
        elif framer.skipped:
            self._m_noise.inc(len(framer.skipped), meter=name)
            self.ctx.log.warning("%s: skipped %d byte(s) of noise before the reply: %s", name,
                                 len(framer.skipped), framer.skipped.hex(" "))

    # -- the cycle -------------------------------------------------------------------------------------

    async def poll(self, ts: int) -> PollResult:
        mc = self.ctx.meter
        out: list[Reading] = []
        errors: list[str] = []
        answered = False
        i = 0
        while i < len(self.blocks):
            block = self.blocks[i]
            try:
                reply = await self.request(mb.read_request(self.unit, block.function, block.start, block.count))
            except mb.ModbusException as exc:
                answered = True
                if exc.status in _SPLIT_ON:
                    parts = split_block(block)
                    if parts is not None:
                        self.blocks[i:i + 1] = parts
                        self._m_split.inc(meter=mc.name)
                        self.ctx.log.info("%s: %s; reading %s and %s separately from now on", mc.name, exc,
                                          parts[0].describe(), parts[1].describe())
                        continue
                    if exc.status == 0x02:
                        del self.blocks[i]
                        spec = block.items[0]
                        self.dropped.append(f"{spec.channel} @ {spec.where}")
                        self.ctx.log.warning("%s: %s; channel %s is not polled any more (check the register "
                                             "map; a restart retries it)", mc.name, exc, spec.channel)
                        continue
                if exc.status in _GATEWAY_NO_ANSWER:
                    # The converter says the meter behind it is silent: as good as a timeout, and the
                    # remaining blocks would get the same answer after the same wait.
                    return PollResult(tuple(out), (), bool(out), str(exc))
                errors.append(str(exc))
                i += 1
                continue
            except (ReplyTimeout, FrameError, TransportError, LineStopping) as exc:
                # Retries are spent: the meter (or the line) is gone for this cycle; asking the next block
                # would only cost another waiting_time per block and hold up the other meters of the bus.
                return PollResult(tuple(out), (), answered, str(exc))
            except MeterError as exc:
                return PollResult(tuple(out), (), True, str(exc))
            answered = True
            self._decode(block, reply.data, ts, out)
            i += 1
        return PollResult(tuple(out), (), answered or not self.blocks, "; ".join(errors) or None)

    def _decode(self, block: Block, data: bytes, ts: int, out: list[Reading]) -> None:
        name = self.ctx.meter.name
        view = memoryview(data)
        for spec in block.items:
            value = spec.value(view, spec.address - block.start)
            if value is None:
                self.ctx.log.debug("%s: %s at %s holds no valid value; skipped", name, spec.channel, spec.where)
                continue
            out.append(Reading(name, spec.channel, Archive.CURRENT.value, ts, value, spec.unit))

    async def probe(self) -> bool:
        if not self.blocks:
            return True
        b = self.blocks[0]
        try:
            await self.request(mb.read_request(self.unit, b.function, b.start, b.count), retries=0)
        except mb.ModbusException as exc:
            return exc.status not in _GATEWAY_NO_ANSWER  # the device itself answered
        except (MeterError, ReplyTimeout, FrameError, TransportError, LineStopping):
            return False
        return True

    async def close(self) -> None:
        return None  # Modbus has no session to close
