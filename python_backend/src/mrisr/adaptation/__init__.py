"""Scan-adaptive mode: fine-tune a method on pairs cut from the scan in hand, then run it on that scan."""
