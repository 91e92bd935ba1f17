"""protocol name -> driver class. Explicit: adding a driver means adding a line here."""

from __future__ import annotations

from typing import Callable

from . import Protocol
from .base import Driver, DriverContext
from .iec62056 import Iec62056Driver
from .mbus import MbusDriver
from .mercury230 import Mercury230Driver
from .modbus import ModbusDriver
from .rstech import RstechDriver
from .saures import SauresDriver
from .webmeters import WebmetersDriver

DRIVERS: dict[Protocol, Callable[[DriverContext], Driver]] = {
    Protocol.MERCURY230: Mercury230Driver,
    Protocol.MODBUS: ModbusDriver,
    Protocol.MBUS: MbusDriver,
    Protocol.IEC62056: Iec62056Driver,
    Protocol.RSTECH: RstechDriver,
    Protocol.WEBMETERS: WebmetersDriver,
    Protocol.SAURES: SauresDriver,
}


def make_driver(ctx: DriverContext) -> Driver:
    return DRIVERS[ctx.meter.protocol](ctx)  # type: ignore[index]  # str keys match the str-enum keys
