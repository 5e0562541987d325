"""Benchmark suite: Roost against Mosquitto on 127.0.0.1 (``python -m bench``)."""
