"""Benchmarks: accuracy and speed of crossfire on the bundled and real scenes."""
