"""neuropil: neuron segmentation of 3-D electron microscopy across domains.

Pipeline: EM volume -> 3-D U-Net affinities -> watershed fragments ->
agglomeration -> neurons, with metrics and pictures at each step.

Conventions (see :mod:`neuropil.conventions`, tested in ``tests/test_conventions.py``):

- arrays are ``(z, y, x)``; multi-channel arrays are ``(c, z, y, x)``;
- ``voxel_size`` is in nanometres, ``(z, y, x)``;
- an affinity of 1 means both voxels belong to the same object; offsets point
  backwards, nearest neighbours are ``(-1, 0, 0), (0, -1, 0), (0, 0, -1)``;
- label ids are ``uint64`` and 0 means "no object here"; what 0 stands for
  (boundary, extracellular space, unknown) is declared by each dataset;
- metrics take ``(segmentation, ground_truth)`` and report split and merge
  errors separately.
"""

# The one place the version is written: pyproject.toml reads it for the package metadata.
__version__ = "0.1.0"
