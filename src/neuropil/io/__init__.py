"""Volume addresses, lazy volumes and readers/writers for HDF5, zarr (OME-Zarr), N5, TIFF stacks and image slices.

An address names one array:

- ``file.h5:key`` (also ``.hdf5``, ``.hdf``): an HDF5 dataset (gzip, LZF, ... as h5py
  reads them). CREMI files are HDF5: ``sample_A.hdf:volumes/raw``,
  ``sample_A.hdf:volumes/labels/neuron_ids``. gala's files hold one dataset
  ``stack`` and need no key. A NeuroProof ``groundtruth.h5`` (``stack`` holding
  supervoxels, ``transforms`` mapping them to bodies) read without a key gives bodies.
- ``dir.zarr/key`` or ``dir.zarr``: a zarr v2 or v3 array; an OME-Zarr multiscale
  group gives its first (finest) level, ``image.ome.zarr/1`` a coarser one.
- ``dir.n5/key``: an N5 dataset (raw, gzip, bzip2, xz, blosc, zstd blocks).
- ``stack.tif`` (``.tiff``): a multi-page TIFF (SNEMI3D's AC3/AC4 stacks).
- ``folder/``: a folder of TIFF or PNG slices, one per z, in natural order
  (``im2.png`` before ``im10.png``).

:func:`open_volume` opens an address lazily: it returns a :class:`Volume` with
``shape``, ``dtype``, ``voxel_size`` and ``offset`` (from the file's metadata where it
stores them) whose numpy-style slicing reads only the region asked for.
:func:`read_volume` reads a whole array, :func:`write_volume` writes one atomically.

Written to a container named ``*.ome.zarr`` (``name.ome.zarr``: the container is the
image; ``name.ome.zarr/key``: an image in a group of it), an array becomes an OME-Zarr
0.4 multiscale image that neuroglancer, napari and Fiji read directly
(:func:`~neuropil.io.zarr.write_ome_zarr`): level 0 the array, each further level halving
the axes whose voxels are under twice the finest (z of anisotropic data waits for y and
x) down to 32 voxels, by block mean for images and by the most frequent id for
segmentations (marked as label images); each level's ``scale`` is its voxel size in
nanometres, a (c, z, y, x) array's ``c`` a channel axis. neuropil's attributes sit on
the image's group and are read back with every level. Plain ``dir.zarr`` addresses
are written as single arrays, as always.

Voxel size metadata read, converted to nanometres and z-first (every unit through
:func:`neuropil.io.units.to_nm`; an unknown unit is an error, not a guess):

========== ===================================================================
HDF5       dataset attribute ``resolution`` (nm, z-first, as CREMI; or in the units
           of a per-axis ``units`` list) or ``voxel_size`` (likewise, as funlib), or
           ``element_size_um`` (um, z-first, as ilastik and Fiji); ``offset`` like
           ``resolution``
zarr       attribute ``resolution`` or ``voxel_size`` (nm, z-first, as funlib; or a
           per-axis ``units`` list); ``offset``
OME-Zarr   ``multiscales`` axes units and the level's ``scale``/``translation``
N5         ``resolution`` (x-first; nm, or an x-first ``units`` list) or
           ``pixelResolution`` (``dimensions`` x-first, ``unit``), times the level's
           ``downsamplingFactors``, else an enclosing group's; ``offset`` (x-first);
           ``voxel_size`` (z-first, as funlib.persistence writes it); COSEM ``transform``
TIFF       ImageJ ``spacing``, ``unit`` and the X/Y resolution tags
========== ===================================================================

Two conventions on one array that disagree are an error naming both. Each volume says
where its voxel size and offset came from (:attr:`Volume.voxel_size_source`,
:mod:`~neuropil.io.metadata`).

Modules: :mod:`~neuropil.io.addresses` (parsing addresses), :mod:`~neuropil.io.units`
(length units), :mod:`~neuropil.io.metadata` (voxel size conventions and their sources),
:mod:`~neuropil.io.hdf5`, :mod:`~neuropil.io.zarr`, :mod:`~neuropil.io.n5`,
:mod:`~neuropil.io.tiff` (one per format), :mod:`~neuropil.io.volume` (:class:`Volume` and
the entry points that pick a format).
"""

from neuropil.io.addresses import VolumeAddress, parse_address
from neuropil.io.volume import Volume, open_volume, read_volume, write_volume
from neuropil.io.zarr import write_ome_zarr

__all__ = ["Volume", "VolumeAddress", "open_volume", "parse_address", "read_volume", "write_ome_zarr", "write_volume"]
