"""Kernel pruning shared by every recipe whose model lists its prunable units (greenpipe.prune.lkam)."""
