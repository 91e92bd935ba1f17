"""M-Bus addressing: manufacturer codes and secondary addresses (select by SND_UD to address 253).
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import ADDRESS_SELECTED, C_SND_UD, CI_SELECT, encode_long


def decode_manufacturer(code: int) -> str:
    """Two header bytes (as a little-endian int) -> three letters, e.g. 0x2C2D -> "KAM"."""
    return "".join(chr(((code >> shift) & 0x1F) + 64) for shift in (10, 5, 0))


def encode_manufacturer(letters: str) -> int:
    if len(letters) != 3 or not all("A" <= ch <= "Z" for ch in letters.upper()):
        raise ValueError(f"a manufacturer code is three letters A-Z, got {letters!r}")
    a, b, c = (ord(ch) - 64 for ch in letters.upper())
    return (a << 10) | (b << 5) | c


@dataclass(frozen=True, slots=True)
class SecondaryAddress:
    """The 16-hex-digit secondary address as libmbus writes it: ``IIIIIIIIMMMMVVDD`` = id (8 BCD digits, most
    significant first), manufacturer bytes in wire order, version, device type (medium). ``F`` digits are
    wildcards (only meaningful in a selection)."""

    text: str

    @classmethod
    def parse(cls, text: str, *, wildcards: bool = True) -> SecondaryAddress:
        t = text.strip().upper()
        if len(t) == 8:
            t += "FFFFFFFF"
        if len(t) != 16 or any(ch not in "0123456789ABCDEF" for ch in t):
            raise ValueError(f"a secondary address is 8 decimal digits (the id) or 16 hex digits (id, "
                             f"manufacturer, version, medium), got {text!r}")
        if any(ch in "ABCDE" for ch in t[:8]):
            raise ValueError(f"the id part of a secondary address is decimal (F = wildcard), got {t[:8]!r}")
        if not wildcards and "F" in t[:8]:
            raise ValueError(f"wildcards (F) are only for scanning; give the meter's full id, got {t[:8]!r}")
        return cls(t)

    @property
    def id(self) -> str:
        return self.text[:8]

    @property
    def has_wildcards(self) -> bool:
        return "F" in self.text

    def encode(self) -> bytes:
        t = self.text
        ident = bytes.fromhex(t[:8])[::-1]        # BCD, least significant byte first on the wire
        return ident + bytes.fromhex(t[8:])

    def matches(self, ident: str, manufacturer: int, version: int, medium: int) -> bool:
        """Whether a slave with this identity answers a selection with this (possibly wildcard) mask."""
        mfr = manufacturer.to_bytes(2, "little").hex().upper()
        actual = f"{ident}{mfr}{version:02X}{medium:02X}"
        return all(m == "F" or m == a for m, a in zip(self.text, actual))

    def with_digit(self, pos: int, digit: str) -> SecondaryAddress:
        return SecondaryAddress(self.text[:pos] + digit + self.text[pos + 1:])

    def __str__(self) -> str:
        return self.text


def select_secondary(address: SecondaryAddress | str) -> bytes:
    """SND_UD to 253 with CI 52: the matching slave answers E5 and is selected, all others deselect."""
    sa = address if isinstance(address, SecondaryAddress) else SecondaryAddress.parse(address)
    return encode_long(C_SND_UD, ADDRESS_SELECTED, CI_SELECT, sa.encode())
