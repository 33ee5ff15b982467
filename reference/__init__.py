"""The released data-preparation loops, transcribed: the reference of the tests and benchmark.py data."""
