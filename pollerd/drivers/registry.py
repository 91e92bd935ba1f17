"""protocol name -> driver class. Explicit: adding a driver means adding a line here.

Entries are "module:Class" references imported on first use, so a gateway loads only the drivers its config
names (the cloud drivers alone pull in XML-RPC and a few MB of modules a field-bus gateway never needs).
A test may put a class itself in place of a reference.
"""

from __future__ import annotations

from collections.abc import Callable

from . import Protocol, resolve
from .base import Driver, DriverContext

DRIVERS: dict[Protocol, str | Callable[[DriverContext], Driver]] = {
    Protocol.MERCURY230: "pollerd.drivers.mercury230:Mercury230Driver",
    Protocol.MODBUS: "pollerd.drivers.modbus:ModbusDriver",
    Protocol.MBUS: "pollerd.drivers.mbus:MbusDriver",
    Protocol.IEC62056: "pollerd.drivers.iec62056:Iec62056Driver",
    Protocol.RSTECH: "pollerd.drivers.rstech:RstechDriver",
    Protocol.WEBMETERS: "pollerd.drivers.webmeters:WebmetersDriver",
    Protocol.SAURES: "pollerd.drivers.saures:SauresDriver",
}


def driver_class(protocol: str) -> Callable[[DriverContext], Driver]:
    entry = DRIVERS[protocol]  # type: ignore[index]  # str keys match the str-enum keys
    return resolve(entry) if isinstance(entry, str) else entry


def make_driver(ctx: DriverContext) -> Driver:
    return driver_class(ctx.meter.protocol)(ctx)
