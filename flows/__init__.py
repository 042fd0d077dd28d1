"""Prefect flows. They only compose: each task runs one DVC stage, so DVC and
Prefect execute the same code and DVC's lock file decides what reruns."""
