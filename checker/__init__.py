"""The gradient checker behind check.py: trace.py records what a backward() computes,
reference.py gets the answers from PyTorch's autograd, verdict.py compares and names the
classic mistakes, network.py and units.py run the checks. exercise.py grades a learner's
exercise (and holds the NumPy trainer's --exercise), guard.py runs the learner's function with
a time limit and its failures as its own."""
