"""What both trainers share but a learner need not read: the loop's machinery
(session.py), the flags, the run record, stopping on signals, the share of the cores."""
