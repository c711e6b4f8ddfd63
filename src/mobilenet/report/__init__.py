"""Reads a model and tells about it: metrics, plots, the evaluation pass, and the HTML page."""
