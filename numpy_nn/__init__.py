"""The from-scratch network: NumPy and the standard library only."""
