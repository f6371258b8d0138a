"""Inference on files and folders: bundle loading, the streaming runner, heatmaps."""
