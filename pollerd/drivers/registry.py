"""protocol name -> driver, through the protocol catalog (:mod:`pollerd.catalog`).

A driver module is imported on first use, so a gateway loads only the drivers its config names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

from pollerd.catalog import CATALOG, Catalog

from .base import Driver, DriverContext


def driver_class(protocol: str, catalog: Catalog = CATALOG) -> Callable[[DriverContext], Driver]:
    return cast("Callable[[DriverContext], Driver]", catalog[protocol].driver.load())


def make_driver(ctx: DriverContext, catalog: Catalog = CATALOG) -> Driver:
    return catalog[ctx.meter.protocol].make_driver(ctx)
