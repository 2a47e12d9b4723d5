"""Datasets: raw archives in, compact prepared arrays out, and the on-device batch loader."""
