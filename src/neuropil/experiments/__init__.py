"""Experiments run as one command: the synthetic demo and the method's experiment (``neuropil experiment``, ``neuropil study``)."""
