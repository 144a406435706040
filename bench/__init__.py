"""Side-by-side benchmarks of fjdl against numpy, plain JAX, optax + flax and PyTorch.

Run ``python -m bench`` (full sizes) or ``python -m bench --quick`` (small sizes, a smoke test).
See ``bench/RESULTS.md`` for the figures and how to read them.
"""
