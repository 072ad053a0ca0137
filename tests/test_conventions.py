import numpy as np

from neuropil.conventions import LABEL_DTYPE, METHOD_VOXEL_SIZE, NEAREST_NEIGHBOURS, LabelZero
from neuropil.targets import affinities_from_labels


def test_nearest_neighbour_offsets_point_backwards_z_first():
    assert NEAREST_NEIGHBOURS == ((-1, 0, 0), (0, -1, 0), (0, 0, -1))
    assert all(sum(offset) == -1 for offset in NEAREST_NEIGHBOURS)


def test_affinity_one_means_same_object_and_channel_c_relates_p_to_p_plus_offset():
    labels = np.zeros((3, 1, 1), dtype=LABEL_DTYPE)
    labels[1:] = 7
    affinities, _ = affinities_from_labels(labels)
    # voxel z=2 and its partner z=1 are both object 7; z=1 and z=0 are not
    assert affinities[0, 2, 0, 0] == 1 and affinities[0, 1, 0, 0] == 0


def test_label_zero_meanings():
    assert {m.value for m in LabelZero} == {"boundary", "extracellular", "unknown"}


def test_method_voxel_size_is_z_first_nanometres_and_the_default_of_every_config():
    from neuropil.config import RunConfig
    from neuropil.model import ModelConfig

    assert METHOD_VOXEL_SIZE == (25.0, 13.0, 13.0)  # nm: sections 25 thick, 13 in-plane
    assert ModelConfig().voxel_size == METHOD_VOXEL_SIZE
    assert RunConfig.model_fields["target_voxel_size"].default == METHOD_VOXEL_SIZE
