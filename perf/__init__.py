"""The maintainer's tools: the benchmark, the FLOP counts behind its roofline, and
the regeneration of results/reference/."""
