"""The daemon: the supervisor (supervisor.py) runs lines, meters, the store, sinks and the API under one
TaskGroup; the per-meter runner (runner.py) executes cycles and keeps their state; reload.py works out what
a new config changes; notify.py speaks sd_notify; wiring.py builds the parts from the config."""

from .reload import ReloadRefused
from .runner import MeterRun, MeterRunner
from .supervisor import Daemon, install_signal_handlers
from .wiring import build_driver, build_lines, db_path, default_state_dir, meter_state

__all__ = ["Daemon", "MeterRun", "MeterRunner", "ReloadRefused", "build_driver", "build_lines", "db_path",
           "default_state_dir", "install_signal_handlers", "meter_state"]
