"""Shared benchmark pieces: machine description, timing, FLOP counting, profiling, memory and report helpers."""
