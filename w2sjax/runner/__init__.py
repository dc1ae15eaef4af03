"""What runs an experiment, apart from the science: stage keys and checkpoints, the run directory
lock, interrupts (SIGINT in :mod:`~w2sjax.runner.sigint`, SIGTERM in
:mod:`~w2sjax.runner.preemption`), atomic writes, content hashes, disk use, integrity checks,
XLA flags, compile statistics, progress lines and TensorBoard curves.

Importing this package imports none of its modules.
"""
