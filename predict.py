"""Read handwritten digits from picture files with every trained network.

    python predict.py my_seven.png photo_of_a_three.jpg
    python predict.py digit.png --results-dir results/reference   # the committed runs
    python predict.py digit.png --runs a_metrics.json b_metrics.json  # pictures before --runs

Each picture should hold one digit on plain paper: dark ink on light paper or light on
dark, which is told from the picture's border. It goes through the demo page's
preprocessing (mnist_style.py: the MNIST recipe), then every network trained so far
reads it, and its three most likely digits are printed:

    my_seven.png
      NumPy MLP      7 99.8%   2  0.1%   1  0.0%
      PyTorch MLP    ...

A picture that cannot be read is one line on stderr; the others are still read, and the
exit status is 1.
"""
import sys
from pathlib import Path

from harness import ctrl_c

if __name__ == "__main__":  # Ctrl-C, while importing or reading: one line, not a traceback
    ctrl_c.one_line("predict.py: interrupted (Ctrl-C)")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from demo.models import add_run_flags, models_or_exit  # noqa: E402
from harness.closed_stdout import keep_running_if_stdout_closes  # noqa: E402
from harness.flags import OneLineParser  # noqa: E402
from mnist_style import NoInk, ink_from_grey, mnist_style  # noqa: E402

TOP = 3


def read_grey(path):
    """A picture file -> its grey levels (H, W) in [0, 1], 0 black. A transparent background
    counts as white paper. A FIFO, device or socket is refused (ValueError): reading one would
    wait for a writer, or read for ever."""
    path = Path(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # (a folder: open says so)
        raise ValueError("not a regular file but a FIFO, device or socket")
    with Image.open(path) as picture:
        if picture.mode.startswith("I"):     # 16- or 32-bit grey: PIL's convert clips it at 255
            return deep_grey(np.asarray(picture))
        rgba = picture.convert("RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    return np.asarray(on_white.convert("L"), dtype=np.float64) / 255


def deep_grey(levels):
    """Grey levels of more than 8 bits (PIL modes I;16 and I) -> [0, 1], divided by white for
    the file's depth, as 8-bit levels are by 255: 65535 for 16 bits (what PNG holds), else
    the largest 32-bit level. Not by the picture's own range: ink_from_grey finds the paper's
    and the ink's levels itself, as it does for 8 bits."""
    white = 65535 if levels.max() <= 65535 else 2**31 - 1
    return np.clip(levels.astype(np.float64) / white, 0, 1)


def top_line(model, probabilities, width):
    """'NumPy MLP      7 99.8%   2  0.1%   1  0.0%': the TOP most likely digits."""
    best = np.argsort(probabilities)[::-1][:TOP]
    return f"  {model.name:<{width}}" + "".join(f"  {d} {100 * probabilities[d]:4.1f}%" for d in best)


def read_picture(path, models):
    """The lines printed for one picture; ValueError or OSError says why it cannot be read."""
    image = mnist_style(ink_from_grey(read_grey(path)))            # 28,28
    width = max(len(model.name) for model in models)
    return [str(path)] + [top_line(model, model.read(image)[0], width) for model in models]


def main(argv=None):
    parser = OneLineParser(description="Read handwritten digits from PNG or JPEG files "
                                       "with every trained network.")
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE",
                        help="picture files, one digit on plain paper in each")
    add_run_flags(parser)
    args = parser.parse_args(argv)
    models, notes = models_or_exit(args)
    if not models:
        sys.exit(f"error: no trained model found: {'; '.join(notes)}")
    failed = 0
    keep_running_if_stdout_closes()  # `predict.py *.png | head -2`: every picture is still read
    for path in args.images:
        try:
            lines = read_picture(path, models)
        except NoInk:
            failed += 1
            print(f"error: {path}: no digit found, the picture is blank", file=sys.stderr)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            failed += 1
            reason = getattr(e, "strerror", None) or str(e)
            print(f"error: {path}: cannot read it as a picture ({reason})", file=sys.stderr)
        else:
            print("\n".join(lines))        # outside the try: a closed stdout is not the picture's fault
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
