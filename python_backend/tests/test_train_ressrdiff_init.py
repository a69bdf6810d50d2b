"""`mrisr train --method ressrdiff --init CARD`: fine-tuning starts from that card's verified weights (the
shipped ones, to continue on label-driven subjects), and a card of another network is refused."""

import argparse
import json

import pytest
import torch

from mrisr.errors import InputError
from mrisr.io.model_store import load_card, load_state_dict
from mrisr.training.tasks import ressrdiff


def task_args(init):
    return argparse.Namespace(batch_size=2, pairs=1, init=init)


def test_init_loads_the_named_cards_weights():
    task = ressrdiff.make_task("cpu", task_args("ressrdiff_cpu"))
    network = task.build_network()
    shipped = load_state_dict(load_card("ressrdiff_cpu"))
    for name, tensor in network.state_dict().items():
        torch.testing.assert_close(tensor, shipped[name])
    assert task.card()["initialised_from"]["sha256"] == load_card("ressrdiff_cpu")["sha256"]
    fresh = ressrdiff.make_task("cpu", task_args(None))
    assert fresh.card()["initialised_from"] is None
    first = next(iter(shipped))
    assert not torch.equal(fresh.build_network().state_dict()[first], shipped[first])


def test_init_from_a_card_file_of_another_network_is_refused(tmp_path):
    card = load_card("sr3pdm_cpu")
    folder = card.pop("_folder")
    path = tmp_path / "other.json"
    path.write_text(json.dumps(card))
    (tmp_path / card["weights"]).symlink_to(f"{folder}/{card['weights']}")
    with pytest.raises(InputError, match="not a Res-SRDiff"):
        ressrdiff.make_task("cpu", task_args(str(path))).build_network()


def test_crops_of_a_subject_smaller_than_the_crop_are_padded(tmp_path):
    """A 2 mm label-driven subject can be smaller than the 96-pixel training crop along an axis."""
    import numpy as np

    from mrisr.training.pool import PairArrays, PairPool

    shape = (40, 90, 120)
    arrays = PairArrays(np.ones(shape, np.float32), np.ones(shape, np.float32), np.ones(shape, np.float32),
                        np.ones(shape, bool))
    pool = PairPool(1, folder=tmp_path)
    pool._loaded[0] = arrays
    crops = pool.random_slices(np.random.default_rng(0), 12, (96, 96))
    assert crops.hr.shape == (12, 96, 96)
    assert crops.mask.any(axis=(1, 2)).all() and not crops.mask.all()  # real voxels plus the padding
    assert np.array_equal(crops.hr > 0, crops.mask)
