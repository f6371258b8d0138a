"""Evaluation: metrics with bootstrap intervals, operating points, report figures."""
