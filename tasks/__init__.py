"""Pipeline stages: one module per DVC stage, each run as ``python -m tasks.<stage>``."""
