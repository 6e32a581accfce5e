"""Firmware outputs: the C array, op resolver and settings; the Ethos-U (Vela) build."""
