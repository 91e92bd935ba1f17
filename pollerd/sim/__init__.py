"""Meter simulators that speak the real protocols over TCP and a pty: for tests, the demo and benchmarks."""
