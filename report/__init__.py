"""What compare.py draws and writes, one file per kind of output:

    run.py      a run as the table and the pictures see it (RunResult), its model and its names
    table.py    the markdown report: the table, the speed ratio, warnings about unfair comparisons
    curves.py   loss, accuracy, seconds and samples/s per epoch, every run in one figure
    inside.py   what a trained network does and holds: confusion matrix, mistakes, an MLP's
                first-layer weights, a CNN's filters and the feature maps of one test digit
    learning.py how a run learned, layer by layer: gradient RMS, update ratios, dead units,
                activations over the steps, and activation histograms at the start and the end

and what perf/benchmark.py writes from its record: throughput.py (the tables and the picture).

Each function takes runs that compare.py has read and checked and returns text or a matplotlib
figure; choosing the backend and writing the files is compare.py's job, and nothing here imports
it. A new kind of picture gets its own function or file here.
"""
