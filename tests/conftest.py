"""Test-session setup: import minkseg before anything imports torch, so the tests run under the same OpenMP wait
settings as the stages (minkseg/openmp_env.py; libgomp reads them once, when torch loads it)."""
import minkseg  # noqa: F401
