"""The video system's library side: training, calibration dumps through the split
pipeline, and the host loop that runs TSM kernels with the shifts on the CPU."""
