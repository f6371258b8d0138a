"""Inference tasks of the pneumonia MONAI Label app."""
