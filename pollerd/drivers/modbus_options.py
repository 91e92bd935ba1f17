"""Modbus meter keys (its ProtocolSpec.options in pollerd/catalog.py): the register map inline and/or from a template
file. Finding and reading template files happens here, in the option layer; the codec
(:mod:`pollerd.protocols.modbus_map`) gets the parsed data only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from ..compat import tomllib
from ..errors import OptionError
from ..protocols.modbus import MAX_READ_REGISTERS
from ..protocols.modbus_map import (
    DEFAULT_MAX_GAP,
    MODES,
    ModbusOptions,
    RegisterSpec,
    close_match,
    order,
    parse_registers,
    parse_template,
)

__all__ = ["OPTION_KEYS", "PACKAGE_TEMPLATES", "find_template", "load_template", "parse_options"]

PACKAGE_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def find_template(name: str, base_dir: str) -> Path:
    """A template file: a path (relative to the config's directory), or a name looked up in
    ``<config dir>/templates/`` and then in the templates shipped with pollerd."""
    if os.sep in name or "/" in name or name.endswith(".toml"):
        path = Path(base_dir, name)
        if path.is_file():
            return path
        raise OptionError(f"template file {str(path)!r} not found", ("template",))
    tried = []
    for folder in (Path(base_dir, "templates"), PACKAGE_TEMPLATES):
        path = folder / f"{name}.toml"
        if path.is_file():
            return path
        tried.append(str(folder))
    known = sorted({p.stem for folder in (Path(base_dir, "templates"), PACKAGE_TEMPLATES) if folder.is_dir()
                    for p in folder.glob("*.toml")})
    raise OptionError(f"template {name!r} not found in {' or '.join(tried)}{close_match(name, known)}; "
                      f"known: {', '.join(known) or 'none'}", ("template",))


def load_template(path: Path, *, word_order: str | None = None,
                  byte_order: str | None = None) -> list[RegisterSpec]:
    """Registers of a template file. ``word_order``/``byte_order`` given by the meter override the
    template's defaults (a firmware quirk of one installation), not a register's own keys."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise OptionError(f"template {str(path)!r}: {exc}", ("template",)) from None
    try:
        return parse_template(doc, word_order=word_order, byte_order=byte_order)
    except OptionError as exc:
        where = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in exc.key).lstrip(".")
        raise OptionError(f"template {str(path)!r}: {where}: {exc.message}", ("template",)) from None


OPTION_KEYS = frozenset(("modbus_mode", "template", "registers", "word_order", "byte_order", "max_gap"))


def parse_options(raw: Mapping[str, object], base_dir: str) -> ModbusOptions:
    """The catalog's option parser for protocol ``modbus``."""
    mode = raw.get("modbus_mode", "rtu")
    if mode not in MODES:
        raise OptionError(f"modbus_mode must be one of {', '.join(MODES)}, got {mode!r}"
                          f"{close_match(str(mode), MODES)}", ("modbus_mode",))
    wo = order(raw["word_order"], ("word_order",)) if "word_order" in raw else None
    bo = order(raw["byte_order"], ("byte_order",)) if "byte_order" in raw else None
    gap = raw.get("max_gap", DEFAULT_MAX_GAP)
    if isinstance(gap, bool) or not isinstance(gap, int) or not 0 <= gap <= MAX_READ_REGISTERS:
        raise OptionError(f"max_gap must be an integer 0..{MAX_READ_REGISTERS}, got {gap!r}", ("max_gap",))
    specs: list[RegisterSpec] = []
    template_path = None
    if "template" in raw:
        name = raw["template"]
        if not isinstance(name, str) or not name:
            raise OptionError(f"expected a template name, got {name!r}", ("template",))
        template_path = find_template(name, base_dir)
        specs = load_template(template_path, word_order=wo, byte_order=bo)
    if "registers" in raw:
        own = parse_registers(raw["registers"], ("registers",), word_order=wo or "big", byte_order=bo or "big")
        mine = {s.channel for s in own}
        # A meter's own entry replaces the template's entry of the same channel.
        specs = [s for s in specs if s.channel not in mine] + own
    if not specs:
        raise OptionError("a modbus meter needs registers = [{ address = ..., type = ..., channel = ... }] "
                          "and/or template = \"...\"", ())
    return ModbusOptions(mode=str(mode), registers=tuple(specs), max_gap=gap,
                         template=str(template_path) if template_path else None)
