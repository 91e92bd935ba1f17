"""Reading a config file defensively, before any parsing (issue 14): regular files only, a size cap, a nesting
cap; and whether a store path can work at all. Each problem is one ConfigError line (exit 78), never a hang,
a traceback or memory running out.

- A FIFO would block ``open()`` until some writer appears (``pollerd check`` hung for ever) and ``/dev/zero``
  never ends (``read()`` grew until memory ran out): only regular files are read, and the file is opened
  non-blocking so that finding out costs nothing.
- tomllib parses nested arrays and inline tables recursively: 3000 levels raised RecursionError. Real configs
  nest four or five levels (a list of tables holding a list of tables); the text is scanned for brackets
  before parsing, and RecursionError is still caught around the parser as a second line of defence.
"""

from __future__ import annotations

import os
import re
import stat

from pollerd.errors import ConfigError

# A config for 1000 meters is ~300 KB; anything past this is not a config someone wrote.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
# Arrays and inline tables nested deeper than this are refused before parsing.
MAX_NESTING = 32

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))

# What the nesting scan stops at: brackets, string and comment starts, and line ends (for the line number).
_INTERESTING = re.compile(r"[\[\]{}\"'#\n]")


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_config_text(source: str) -> str:
    """The text of the config file at ``source``, checked for type, size, encoding and nesting depth."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; for a regular file it
        # changes nothing.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=source) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"not a regular file ({_kind(st.st_mode)}); a config must be a file", path=source)
        if st.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"too large: {st.st_size} bytes, a config is at most {MAX_CONFIG_BYTES} bytes",
                              path=source)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)  # the file may grow between fstat and read
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", path=source) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"too large: more than {MAX_CONFIG_BYTES} bytes", path=source)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"not UTF-8 (byte 0x{raw[exc.start]:02x})", path=source, line=line) from None
    deep_at = too_deep(text)
    if deep_at is not None:
        raise ConfigError(f"arrays or inline tables nested more than {MAX_NESTING} deep", path=source,
                          line=deep_at)
    return text


def too_deep(text: str, limit: int = MAX_NESTING) -> int | None:
    """The line where brackets outside strings and comments first nest deeper than ``limit``, or None.

    A scan, not a TOML parser: it knows strings (basic, literal, multi-line, with escapes) and comments well
    enough not to count a bracket inside them, which is all a depth bound needs."""
    depth, line, i, n = 0, 1, 0, len(text)
    while True:
        m = _INTERESTING.search(text, i)
        if m is None:
            return None
        c, i = m.group(), m.end()
        if c == "\n":
            line += 1
        elif c == "#":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c in "\"'":
            end = _string_end(text, i - 1, c)
            line += text.count("\n", i, end)
            i = end
        elif c in "[{":
            depth += 1
            if depth > limit:
                return line
        else:
            depth = max(0, depth - 1)


def _string_end(text: str, start: int, quote: str) -> int:
    """Index just past the string starting at ``start`` (an unterminated one ends at its line or the text)."""
    n = len(text)
    if text.startswith(quote * 3, start):
        i = start + 3
        while True:
            j = text.find(quote * 3, i)
            if j < 0:
                return n
            if quote == '"' and _escaped(text, j):
                i = j + 1
                continue
            j += 3
            while j < n and text[j] == quote:  # up to two quotes may end the content: """a""""
                j += 1
            return j
    i = start + 1
    while i < n:
        c = text[i]
        if c == "\n":
            return i
        if c == quote and not (quote == '"' and _escaped(text, i)):
            return i + 1
        i += 1
    return n


def _escaped(text: str, i: int) -> bool:
    k = i - 1
    while k >= 0 and text[k] == "\\":
        k -= 1
    return (i - 1 - k) % 2 == 1


def store_path_problem(path: str) -> str | None:
    """Why a store could not live at ``path``, or None. Only what the file system says now; whether the daemon's
    user may write there is for ``run`` to find out (``check`` may run as another user)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        return f"cannot use {path!r}: {exc.strerror or exc}"
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            return (f"{path!r} is a directory; name the database file, e.g. "
                    f"{os.path.join(path, 'pollerd.db')!r}")
        if not stat.S_ISREG(st.st_mode):
            return f"{path!r} is {_kind(st.st_mode)}, not a database file"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while True:  # the first ancestor that exists must be a directory (the rest is created at start)
        try:
            pst = os.stat(parent)
        except FileNotFoundError:
            up = os.path.dirname(parent)
            if up == parent:
                return None
            parent = up
            continue
        except OSError as exc:
            return f"cannot use {path!r}: {parent!r}: {exc.strerror or exc}"
        if not stat.S_ISDIR(pst.st_mode):
            return f"cannot create {path!r}: {parent!r} is {_kind(pst.st_mode)}, not a directory"
        return None
