"""Tests of greenpipe.data (readers, noise model, built-in sample, per-file table)."""
