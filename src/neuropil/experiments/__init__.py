"""Experiments run as one command: the synthetic demo and the domain-bias study."""
