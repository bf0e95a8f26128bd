"""A finished matplotlib figure as PNG bytes: every picture compare.py, sweep.py and
perf/benchmark.py write goes through png(), and each command writes the bytes with its own
one-line errors."""
import io

DPI = 110  # dots per inch: a 10-inch-wide figure is 1,100 pixels, sharp on a screen, small on disk


def png(fig, dpi=DPI):
    """fig as PNG bytes. The figure is closed: pyplot keeps every open figure alive until then."""
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()
