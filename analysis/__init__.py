"""Reads lth run directories (summary.json) and writes tables and plots."""
