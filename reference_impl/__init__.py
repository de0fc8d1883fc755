"""Reference MNIST training: the correct script that learners copy.

It is device-agnostic (CPU, CUDA with AMP) and DDP-ready (``torchrun``), and pitfall-guard
must report zero findings on it, statically and at runtime. Run it with
``python -m pitfall_guard.reference_impl.train --help``.
"""
