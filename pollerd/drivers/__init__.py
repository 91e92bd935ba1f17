"""Meter drivers: per meter family, which requests to send and how replies become readings.

What each protocol can read, its keys and its driver class are declared in :mod:`pollerd.catalog`; this
package holds the drivers themselves. ``OptionError`` (now in pollerd.errors) is re-exported for old imports.
"""

from __future__ import annotations

from pollerd.errors import OptionError

__all__ = ["OptionError"]
