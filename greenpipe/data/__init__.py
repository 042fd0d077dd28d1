"""Datasets: readers per layout, the built-in sample, the camera-noise model."""
