"""M-Bus value information tables (EN 13757-3): what a VIF (primary, FD and FB extensions) means, as
(quantity, unit, multiplier, exponent), and the DIF data field lengths.
"""

from __future__ import annotations

_Entry = tuple[str, str, int, int]
_TIME_MULT = (1, 60, 3600, 86400)


def _primary_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(8):
        t[0x00 + n] = ("energy", "Wh", 1, n - 3)
        t[0x08 + n] = ("energy", "J", 1, n)
        t[0x10 + n] = ("volume", "m³", 1, n - 6)
        t[0x18 + n] = ("mass", "kg", 1, n - 3)
        t[0x28 + n] = ("power", "W", 1, n - 3)
        t[0x30 + n] = ("power", "J/h", 1, n)
        t[0x38 + n] = ("volume flow", "m³/h", 1, n - 6)
        t[0x40 + n] = ("volume flow", "m³/min", 1, n - 7)
        t[0x48 + n] = ("volume flow", "m³/s", 1, n - 9)
        t[0x50 + n] = ("mass flow", "kg/h", 1, n - 3)
    for n in range(4):
        t[0x20 + n] = ("on time", "s", _TIME_MULT[n], 0)
        t[0x24 + n] = ("operating time", "s", _TIME_MULT[n], 0)
        t[0x58 + n] = ("flow temperature", "°C", 1, n - 3)
        t[0x5C + n] = ("return temperature", "°C", 1, n - 3)
        t[0x60 + n] = ("temperature difference", "K", 1, n - 3)
        t[0x64 + n] = ("external temperature", "°C", 1, n - 3)
        t[0x68 + n] = ("pressure", "bar", 1, n - 3)
        t[0x70 + n] = ("averaging duration", "s", _TIME_MULT[n], 0)
        t[0x74 + n] = ("actuality duration", "s", _TIME_MULT[n], 0)
    t[0x6C] = ("date", "", 1, 0)
    t[0x6D] = ("date and time", "", 1, 0)
    t[0x6E] = ("units for H.C.A.", "", 1, 0)
    t[0x78] = ("fabrication number", "", 1, 0)
    t[0x79] = ("enhanced identification", "", 1, 0)
    t[0x7A] = ("bus address", "", 1, 0)
    t[0x7E] = ("any VIF", "", 1, 0)
    t[0x7F] = ("manufacturer specific", "", 1, 0)
    return t


def _fd_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(4):
        t[0x00 + n] = ("credit", "currency", 1, n - 3)
        t[0x04 + n] = ("debit", "currency", 1, n - 3)
        t[0x24 + n] = ("storage interval", "s", _TIME_MULT[n], 0)
        t[0x2C + n] = ("duration since last readout", "s", _TIME_MULT[n], 0)
        t[0x34 + n] = ("period of tariff", "s", _TIME_MULT[n], 0)
        t[0x3C + n] = ("period of nominal data transmissions", "s", _TIME_MULT[n], 0)
    for n in range(1, 4):
        t[0x30 + n] = ("duration of tariff", "s", _TIME_MULT[n], 0)
    for n, name in enumerate(("access number", "medium", "manufacturer", "parameter set identification",
                              "model/version", "hardware version", "firmware version", "software version",
                              "customer location", "customer", "access code user", "access code operator",
                              "access code system operator", "access code developer", "password",
                              "error flags", "error mask", "security key", "digital output", "digital input",
                              "baud rate", "response delay time", "retry", "remote control",
                              "first storage number", "last storage number", "size of storage block",
                              "descriptor for tariff and subunit")):
        t[0x08 + n] = (name, "", 1, 0)
    t[0x1C] = ("baud rate", "Bd", 1, 0)
    t[0x1D] = ("response delay time", "bit times", 1, 0)
    t[0x28] = ("storage interval", "month", 1, 0)
    t[0x29] = ("storage interval", "year", 1, 0)
    t[0x2A] = ("operator specific data", "", 1, 0)
    t[0x2B] = ("time point second", "s", 1, 0)
    t[0x30] = ("start of tariff", "", 1, 0)
    t[0x38] = ("period of tariff", "month", 1, 0)
    t[0x39] = ("period of tariff", "year", 1, 0)
    t[0x3A] = ("dimensionless", "", 1, 0)
    t[0x3B] = ("data container", "", 1, 0)
    for n in range(16):
        t[0x40 + n] = ("voltage", "V", 1, n - 9)
        t[0x50 + n] = ("current", "A", 1, n - 12)
    for n, name in enumerate(("reset counter", "cumulation counter", "control signal", "day of week",
                              "week number", "time point of day change", "state of parameter activation",
                              "special supplier information")):
        t[0x60 + n] = (name, "", 1, 0)
    for n, unit in enumerate(("h", "d", "month", "year")):
        mult = (3600, 86400, 1, 1)[n]
        t[0x68 + n] = ("duration since last cumulation", "s" if n < 2 else unit, mult, 0)
        t[0x6C + n] = ("operating time battery", "s" if n < 2 else unit, mult, 0)
    t[0x70] = ("date and time of battery change", "", 1, 0)
    t[0x71] = ("RF level", "dBm", 1, 0)
    t[0x72] = ("daylight saving", "", 1, 0)
    t[0x73] = ("listening window management", "", 1, 0)
    t[0x74] = ("remaining battery life time", "s", 86400, 0)
    t[0x75] = ("times the meter was stopped", "", 1, 0)
    t[0x76] = ("manufacturer data container", "", 1, 0)
    return t


def _fb_table() -> dict[int, _Entry]:
    t: dict[int, _Entry] = {}
    for n in range(2):
        t[0x00 + n] = ("energy", "Wh", 1, n + 5)          # 0.1 / 1 MWh
        t[0x02 + n] = ("reactive energy", "varh", 1, n + 2)
        t[0x08 + n] = ("energy", "J", 1, n + 8)           # 0.1 / 1 GJ
        t[0x10 + n] = ("volume", "m³", 1, n + 2)
        t[0x18 + n] = ("mass", "kg", 1, n + 5)            # 100 / 1000 t
        t[0x28 + n] = ("power", "W", 1, n + 5)            # 0.1 / 1 MW
        t[0x30 + n] = ("power", "J/h", 1, n + 8)          # 0.1 / 1 GJ/h
    t[0x21] = ("volume", "ft³", 1, -1)
    t[0x22] = ("volume", "US gal", 1, -1)
    t[0x23] = ("volume", "US gal", 1, 0)
    t[0x24] = ("volume flow", "US gal/min", 1, -3)
    t[0x25] = ("volume flow", "US gal/min", 1, 0)
    t[0x26] = ("volume flow", "US gal/h", 1, 0)
    for n in range(4):
        t[0x58 + n] = ("flow temperature", "°F", 1, n - 3)
        t[0x5C + n] = ("return temperature", "°F", 1, n - 3)
        t[0x60 + n] = ("temperature difference", "°F", 1, n - 3)
        t[0x64 + n] = ("external temperature", "°F", 1, n - 3)
        t[0x70 + n] = ("cold/warm temperature limit", "°F", 1, n - 3)
        t[0x74 + n] = ("cold/warm temperature limit", "°C", 1, n - 3)
    for n in range(8):
        t[0x78 + n] = ("cumulative count max power", "W", 1, n - 3)
    return t


PRIMARY: dict[int, _Entry] = _primary_table()
EXT_FD: dict[int, _Entry] = _fd_table()
EXT_FB: dict[int, _Entry] = _fb_table()

# VIFs whose 4-byte (or 2-byte) integers are dates, not numbers.
_DATE_VIFS = {0x6C, 0x6D}
_DATE_FD = {0x30, 0x70}

# Data length by DIF data field; None = variable (LVAR), -1 = not a data field (special functions).
_DATA_LEN = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, None, 6, -1)
_BCD_FIELDS = {0x9, 0xA, 0xB, 0xC, 0xE}


# 6-bit unit codes of the fixed structure -> (quantity, unit, exponent)
def _fixed_units() -> dict[int, tuple[str, str, int]]:
    t: dict[int, tuple[str, str, int]] = {}
    for n in range(9):
        t[0x02 + n] = ("energy", "Wh", n)            # Wh .. 100 MWh
        t[0x0B + n] = ("energy", "J", 3 + n)         # kJ .. 100 GJ
        t[0x14 + n] = ("power", "W", n)              # W .. 100 MW
        t[0x1D + n] = ("power", "J/h", 3 + n)        # kJ/h .. 100 GJ/h
        t[0x26 + n] = ("volume", "m³", n - 6)        # ml .. 100 m³
        t[0x2F + n] = ("volume flow", "m³/h", n - 6)  # ml/h .. 100 m³/h
    t[0x38] = ("temperature", "°C", -3)
    t[0x39] = ("units for H.C.A.", "", 0)
    t[0x3E] = ("same but historic", "", 0)
    t[0x3F] = ("without units", "", 0)
    return t


FIXED_UNITS = _fixed_units()
