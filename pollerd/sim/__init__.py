"""Meter simulators that speak the real protocols over TCP and a pty: for tests, the demo and benchmarks.

Which module serves `pollerd sim PROTOCOL` is declared in the protocol catalog (ProtocolSpec.simulator).
"""
