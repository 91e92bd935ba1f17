"""Modbus driver against pymodbus' server as a real Modbus peer: Modbus TCP and RTU over TCP on loopback,
RTU on a pty pair (pymodbus' serial server on one end, pollerd's serial line on the other), splitting of
refused merged reads, noise, replies from another unit, a dead unit, and end to end through the Daemon."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import tty
from pathlib import Path

import pytest
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from pollerd.config import LineConfig, MeterConfig, load_config
from pollerd.daemon import Daemon
from pollerd.drivers.base import BusDriverContext
from pollerd.drivers.modbus import ModbusDriver
from pollerd.drivers.modbus_options import parse_options
from pollerd.line import Line
from pollerd.metrics import Registry
from pollerd.protocols.crc import append_crc
from pollerd.state import LineState, MeterState
from pollerd.store import Store

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

# Values a real SDM630 could hold, exactly representable as f32 so that equality is exact.
SDM = {30001: 230.5, 30003: 231.25, 30005: 229.75, 30007: 1.5, 30009: 2.25, 30011: 0.125,
       30013: 345.5, 30015: -12.5, 30017: 28.75, 30019: 346.0, 30021: 520.5, 30023: 30.0,
       30025: -10.25, 30027: 48.5, 30029: 3.0, 30031: 0.5, 30033: -0.75, 30035: 0.875,
       30053: 361.75, 30057: 896.5, 30061: 41.25, 30063: 0.25, 30071: 50.0, 30073: 1234.5,
       30075: 12.25, 30077: 456.75, 30079: 7.5, 30201: 399.25, 30203: 400.5, 30205: 398.0, 30225: 0.375}


def expected_sdm() -> dict[str, tuple[float, str]]:
    opts = parse_options({"template": "eastron-sdm630"}, "/nonexistent")
    by_addr = {30001 + s.address: s for s in opts.registers}
    return {by_addr[a].channel: (v * (1000 if by_addr[a].unit in ("Wh", "varh") else 1), by_addr[a].unit)
            for a, v in SDM.items()}


def sdm_device(uid: int, *, fill_holes: bool, values: dict[int, float] = SDM) -> SimDevice:
    ir = [SimData(a - 30001, values=[v], datatype=DataType.FLOAT32) for a, v in sorted(values.items())]
    if fill_holes:  # a device that answers for every address in its map's range (no exception on merges)
        ir.append(SimData(36, count=16, values=0, datatype=DataType.REGISTERS))
        ir += [SimData(a, values=[0, 0], datatype=DataType.REGISTERS) for a in (54, 58)]
        ir.append(SimData(64, count=6, values=0, datatype=DataType.REGISTERS))
    return SimDevice(id=uid, simdata=(
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, count=16, values=False, datatype=DataType.BITS)],
        [SimData(0, values=[0x1234, 0x0102, 0x0304, 0x8001], datatype=DataType.REGISTERS)],
        ir))


async def tcp_peer(devices: list[SimDevice], framer: FramerType = FramerType.SOCKET) -> tuple[ModbusTcpServer, int]:
    srv = ModbusTcpServer(devices, address=("127.0.0.1", 0), framer=framer, ignore_missing_devices=True)
    await srv.serve_forever(background=True)
    return srv, srv.transport.sockets[0].getsockname()[1]


class PtyBridge:
    """Two pty pairs joined back to back (a null modem): pymodbus opens one slave, pollerd the other."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._fds = [*os.openpty(), *os.openpty()]
        am, as_, bm, bs = self._fds
        for fd in (as_, bs):
            tty.setraw(fd)
        for fd in (am, bm):
            os.set_blocking(fd, False)
        self.device_a, self.device_b = os.ttyname(as_), os.ttyname(bs)
        self._loop.add_reader(am, self._copy, am, bm)
        self._loop.add_reader(bm, self._copy, bm, am)

    @staticmethod
    def _copy(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
            if data:
                os.write(dst, data)
        except (BlockingIOError, InterruptedError, OSError):
            pass

    def close(self) -> None:
        self._loop.remove_reader(self._fds[0])
        self._loop.remove_reader(self._fds[2])
        for fd in self._fds:
            os.close(fd)


def make_driver(line_cfg: LineConfig, unit: int, raw_options: dict, *, package_size: int = 80,
                retries: int = 1, waiting_time: float = 0.5, name: str = "m") -> tuple[ModbusDriver, Line, Registry]:
    reg = Registry()
    line = Line(line_cfg, LineState(line_cfg.name, line_cfg.type), reg)
    mc = MeterConfig(name=name, protocol="modbus", line=line_cfg.name, connection_address=unit,
                     waiting_time=waiting_time, pause_time=0.002, package_size=package_size, retries=retries,
                     read=("registers",), options=parse_options(raw_options, "/nonexistent"))
    ctx = BusDriverContext(mc, line, MeterState(name, "modbus", line_cfg.name, unit, 60.0), reg)
    return ModbusDriver(ctx), line, reg


def tcp_line(port: int) -> LineConfig:
    return LineConfig(name="conv", type="tcp", host="127.0.0.1", port=port, reconnect_min=0.05, reconnect_max=0.1)


def values(result) -> dict[str, tuple[float, str]]:
    return {r.channel: (r.value, r.unit) for r in result.readings}


@pytest.mark.parametrize("mode,framer", [("tcp", FramerType.SOCKET), ("rtu_over_tcp", FramerType.RTU)])
async def test_sdm630_template_over_tcp_exact_values_in_four_reads(mode, framer):
    srv, port = await tcp_peer([sdm_device(1, fill_holes=True), sdm_device(2, fill_holes=True)], framer)
    drv, line, reg = make_driver(tcp_line(port), 2, {"template": "eastron-sdm630", "modbus_mode": mode})
    try:
        result = await drv.poll(1_790_000_000)
        assert result.ok, result.error
        assert values(result) == expected_sdm()
        assert {r.ts for r in result.readings} == {1_790_000_000}
        assert line.state.exchanges == 4 == len(drv.blocks)
    finally:
        await line.close()
        await srv.shutdown()


async def test_refused_merged_read_is_split_and_the_split_remembered():
    srv, port = await tcp_peer([sdm_device(1, fill_holes=False)])
    drv, line, reg = make_driver(tcp_line(port), 1, {"template": "eastron-sdm630", "modbus_mode": "tcp"})
    try:
        first = await drv.poll(100)
        assert first.ok, first.error
        assert values(first) == expected_sdm()
        text = reg.render()
        assert 'pollerd_modbus_read_splits_total{meter="m"}' in text
        assert 'pollerd_modbus_exceptions_total{meter="m",code="02"}' in text
        blocks_after_first = list(drv.blocks)
        exchanges = line.state.exchanges
        second = await drv.poll(200)
        assert second.ok and values(second) == expected_sdm()
        assert drv.blocks == blocks_after_first
        assert line.state.exchanges - exchanges == len(drv.blocks)  # no refused read the second time
    finally:
        await line.close()
        await srv.shutdown()


async def test_missing_register_is_dropped_with_a_clear_message(caplog):
    srv, port = await tcp_peer([sdm_device(1, fill_holes=True)])
    regs = [{"address": 30001, "type": "f32", "channel": "U.L1", "unit": "V"},
            {"address": 30343, "type": "f32", "channel": "A+", "unit": "kWh"}]
    drv, line, reg = make_driver(tcp_line(port), 1, {"registers": regs, "modbus_mode": "tcp"})
    try:
        with caplog.at_level(logging.WARNING, logger="pollerd.driver"):
            result = await drv.poll(1)
        assert result.ok and values(result) == {"U.L1": (230.5, "V")}
        assert drv.dropped == ["A+ @ 30343"]
        assert "unit 1: illegal data address at 30343" in caplog.text
    finally:
        await line.close()
        await srv.shutdown()


async def test_holding_registers_and_orders_inline_map():
    srv, port = await tcp_peer([sdm_device(7, fill_holes=True)])
    regs = [{"address": 40001, "type": "u16", "channel": "a"},
            {"address": 40002, "type": "u32", "channel": "b", "scale": 0.01},
            {"address": 40002, "type": "u32", "channel": "c", "word_order": "little"},
            {"register": 3, "function": 3, "type": "s16", "channel": "d"},
            {"address": 1, "channel": "coil"}]
    drv, line, _ = make_driver(tcp_line(port), 7, {"registers": regs, "modbus_mode": "tcp"})
    try:
        result = await drv.poll(1)
        assert result.ok, result.error
        assert values(result) == {"a": (0x1234, ""), "b": (0x01020304 / 100, ""), "c": (0x03040102, ""),
                                  "d": (struct.unpack(">h", b"\x80\x01")[0], ""), "coil": (0.0, "")}
    finally:
        await line.close()
        await srv.shutdown()


async def test_rtu_on_a_pty_with_pymodbus_serial_server():
    bridge = PtyBridge()
    srv = ModbusSerialServer([sdm_device(1, fill_holes=True), sdm_device(3, fill_holes=False)],
                             port=bridge.device_b, baudrate=9600, ignore_missing_devices=True)
    await srv.serve_forever(background=True)
    cfg = LineConfig(name="rs485", type="serial", device=bridge.device_a, baudrate=9600)
    d1, line, _ = make_driver(cfg, 1, {"template": "eastron-sdm630"})
    d3 = ModbusDriver(BusDriverContext(
        MeterConfig(name="m3", protocol="modbus", line="rs485", connection_address=3, waiting_time=0.5,
                    pause_time=0.005, package_size=80, options=parse_options({"template": "eastron-sdm630"}, "/x")),
        line, MeterState("m3", "modbus", "rs485", 3, 60.0), Registry()))
    try:
        r1, r3 = await d1.poll(5), await d3.poll(5)
        assert r1.ok and r3.ok, (r1.error, r3.error)
        assert values(r1) == expected_sdm() == values(r3)
        assert len(d3.blocks) > len(d1.blocks)  # unit 3 has holes: its merged reads were split
    finally:
        await line.close()
        await srv.shutdown()
        bridge.close()


async def scripted_rtu_server(respond):
    """A TCP server answering each request (RTU bytes) with respond(request)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(256):
                out = respond(data)
                if out:
                    writer.write(out)
        finally:
            writer.close()
    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    return srv, srv.sockets[0].getsockname()[1]


async def test_noise_before_the_reply_is_counted_and_the_value_read():
    srv, port = await scripted_rtu_server(
        lambda req: b"\x00\xfe\x11" + append_crc(bytes((req[0], 4, 4)) + struct.pack(">f", 49.5)))
    drv, line, reg = make_driver(tcp_line(port), 3, {"registers": [{"address": 30071, "type": "f32",
                                                                     "channel": "F", "unit": "Hz"}]})
    try:
        result = await drv.poll(1)
        assert result.ok and values(result) == {"F": (49.5, "Hz")}
        assert 'pollerd_modbus_noise_bytes_total{meter="m"} 3' in reg.render()
    finally:
        await line.close()
        srv.close()


async def test_reply_from_another_unit_and_an_exception_are_clear_errors():
    srv, port = await scripted_rtu_server(
        lambda req: append_crc(bytes((4, 4, 2, 0, 1))) if req[0] == 3 else append_crc(bytes((req[0], 0x84, 6))))
    drv, line, reg = make_driver(tcp_line(port), 3, {"registers": [{"address": 30001, "channel": "x"}]})
    busy, line2, _ = make_driver(tcp_line(port), 5, {"registers": [{"address": 30012, "channel": "x"}]})
    try:
        result = await drv.poll(1)
        assert not result.answered and result.readings == ()
        assert "reply from unit 4, expected unit 3" in result.error
        # 1 try, then the retry's 2 fences (the first reply's shape is in doubt, issue 14); the retry itself
        # is not sent without a fence answered
        assert 'pollerd_frame_errors_total{meter="m",kind="address"} 3' in reg.render()
        result = await busy.poll(1)
        assert result.answered and result.error.startswith("unit 5: server device busy at 30012")
    finally:
        await line.close()
        await line2.close()
        srv.close()


async def test_dead_unit_times_out_after_retries_and_probe_says_no():
    srv, port = await scripted_rtu_server(lambda req: b"")
    drv, line, _ = make_driver(tcp_line(port), 9, {"template": "eastron-sdm630"}, waiting_time=0.15)
    try:
        result = await drv.poll(1)
        assert not result.answered and "no complete reply within 0.15s" in result.error
        assert line.state.exchanges == 2  # the first block's try and retry; the rest of the cycle is skipped
        assert await drv.probe() is False
    finally:
        await line.close()
        srv.close()


async def test_gateway_says_target_silent():
    srv, port = await scripted_rtu_server(lambda req: append_crc(bytes((req[0], req[1] | 0x80, 0x0B))))
    silent, line, _ = make_driver(tcp_line(port), 2, {"template": "eastron-sdm630"})
    try:
        result = await silent.poll(1)
        assert not result.answered and "gateway target device failed to respond" in result.error
        assert line.state.exchanges == 1  # an answer, so no retry; the other blocks are not tried
        assert await silent.probe() is False
    finally:
        await line.close()
        srv.close()


# ------------------------------------------------------------------------------------------ end to end


async def test_daemon_end_to_end_tcp_template_and_rtu_pty_inline_map(tmp_path: Path):
    srv, port = await tcp_peer([sdm_device(1, fill_holes=False)])
    bridge = PtyBridge()
    serial = ModbusSerialServer([sdm_device(5, fill_holes=True)], port=bridge.device_b, baudrate=19200,
                                ignore_missing_devices=True)
    await serial.serve_forever(background=True)
    cfg_path = tmp_path / "p.toml"
    cfg_path.write_text(f'''[gateway]
name = "test-gw"
spread = "1s"

[store]
commit_interval = "100ms"

[api]
enabled = false

[[lines]]
name = "rs485"
type = "serial"
device = "{bridge.device_a}"
baudrate = 19200

[[meters]]
name = "sdm"
protocol = "modbus"
ip_address = "127.0.0.1"
port = {port}
connection_address = 1
modbus_mode = "tcp"
template = "eastron-sdm630"
package_size = 80
interval_time = "1s"
waiting_time = "500ms"

[[meters]]
name = "inline"
protocol = "modbus"
line = "rs485"
connection_address = 5
interval_time = "1s"
waiting_time = "500ms"
registers = [
  {{ address = 30073, type = "f32", channel = "A+", unit = "kWh" }},
  {{ address = 30071, type = "f32", channel = "F", unit = "Hz" }},
  {{ register = 0, function = 3, type = "u16", channel = "status" }},
]
''')
    daemon = Daemon(load_config(cfg_path), tmp_path)
    want = {("sdm", ch): v for ch, v in expected_sdm().items()}
    want.update({("inline", "A+"): (1_234_500.0, "Wh"), ("inline", "F"): (50.0, "Hz"),
                 ("inline", "status"): (0x1234, "")})

    async def stored() -> dict:
        try:
            store = await Store.open_readonly(tmp_path / "pollerd.db")
        except Exception:
            return {}
        try:
            rows, _ = await store.query_readings(per_page=1000)
        finally:
            await store.close()
        return {(r.meter, r.channel): (r.value, r.unit) for r in rows}

    task = asyncio.ensure_future(daemon.run())
    try:
        for _ in range(200):
            got = await stored()
            if all(k in got for k in want) or task.done():
                break
            await asyncio.sleep(0.1)
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0
        got = await stored()
        assert {k: got.get(k) for k in want} == want
        assert daemon.runtime.meters["sdm"].last_error is None
    finally:
        if not task.done():
            daemon.request_stop()
            await asyncio.wait_for(task, 20)
        await srv.shutdown()
        await serial.shutdown()
        bridge.close()
