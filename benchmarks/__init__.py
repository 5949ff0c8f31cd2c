"""Reproducible benchmarks; ``python -m benchmarks.run --quick`` (``make benchmark``) runs them all."""
