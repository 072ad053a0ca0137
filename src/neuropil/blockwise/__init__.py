"""Blockwise prediction and segmentation of volumes larger than memory, run by Dask.

A volume is cut into blocks (:func:`blocks`); one task per block reads only its
region plus a halo of context from the input file and writes only its own region
of a chunked zarr output, whose chunks are the blocks, so no two tasks write the
same chunk. :func:`run_blocks` is the one block iterator: it records each finished
block in the job's work folder (with the block's small result, such as its number
of fragments), so a job that was interrupted, killed or failed resumes with the
blocks it has not finished. Outputs are written under a temporary name and moved
into place when every block is done.

The tasks run on Dask: threads by default for prediction (PyTorch uses every core
within a block), processes for segmentation (the numba kernels hold the GIL);
any Dask scheduler can be named, and a ``dask.distributed.Client`` created before
the call runs the tasks on its cluster (every worker must see the same files).

Segmentation follows the usual blockwise scheme (Funke et al. 2019; Lee et al.
2017): watershed fragments per block, with ids made unique by offsetting each
block's ids by the fragments of the blocks before it; per block, the statistics of
every contact between fragments (within the block and across its lower faces);
then one agglomeration of the whole region adjacency graph, which is small next to
the volume; and a last pass that writes each block's segment ids. Agglomerating
the whole graph at once makes the result equal to an in-memory agglomeration of
the same fragments (the merge order depends only on the summed statistics).

References
----------
Funke, J. et al. (2019). Large scale image segmentation with structured loss based
deep learning for connectome reconstruction. IEEE TPAMI 41(7), 1669-1680.
doi:10.1109/TPAMI.2018.2835450
Lee, K., Zung, J., Li, P., Jain, V. & Seung, H. S. (2017). Superhuman accuracy on
the SNEMI3D connectomics challenge. arXiv:1706.00120
"""

from neuropil.blockwise.blocks import DEFAULT_BLOCK_SHAPE, Block, blocks, run_blocks
from neuropil.blockwise.predict import predict_blockwise
from neuropil.blockwise.segment import BLOCKWISE_METHODS, segment_blockwise

__all__ = [
    "BLOCKWISE_METHODS",
    "DEFAULT_BLOCK_SHAPE",
    "Block",
    "blocks",
    "predict_blockwise",
    "run_blocks",
    "segment_blockwise",
]
