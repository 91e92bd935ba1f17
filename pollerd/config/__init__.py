"""Configuration: one TOML file -> frozen dataclasses.

:mod:`~pollerd.config.model` holds the dataclasses (the bottom layer), :mod:`~pollerd.config.load` the loader
(:func:`load_config`), :mod:`~pollerd.config.fields` its validators and :mod:`~pollerd.config.locate` the
line locator. The public names are re-exported here.
"""

from __future__ import annotations

from pollerd.config.load import known_keys, load_config
from pollerd.config.model import (
    ApiConfig,
    ApiToken,
    Config,
    GatewayConfig,
    LineConfig,
    MeterConfig,
    Secret,
    SinkConfig,
    StoreConfig,
)
from pollerd.units import format_duration, format_size, parse_duration, parse_size

__all__ = [
    "ApiConfig", "ApiToken", "Config", "GatewayConfig", "LineConfig", "MeterConfig", "Secret",
    "SinkConfig", "StoreConfig", "format_duration", "format_size", "known_keys", "load_config", "parse_duration",
    "parse_size",
]
