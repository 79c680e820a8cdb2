"""The kit-patched upstream (tox leg lucid216: lucid-dl 2.16.0 with every kit patch)
against the port: upstream's own factories now build the paper's networks."""

from __future__ import annotations

import pickle

import lucid
import lucid.models
import numpy as np
import pytest

import lucid_inception
from lucid_inception import MODEL_NAMES
from lucid_inception.frameworks import LucidAdapter
from lucid_inception.upstream import upstream_is_released

from .conftest import image, patched_upstream_only, randomize_batchnorm
from .test_models import run
from .test_upstream_compat import package_digest

pytestmark = patched_upstream_only

FACTORY_KWARGS = {
    "inception_v4": {},
    "inception_resnet_v1": {"scale": 0.2},
    "inception_resnet_v2": {"scale": 0.2},
}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_upstream_factory_matches_the_port(name: str) -> None:
    assert not upstream_is_released() and not lucid_inception.installed()
    digest = package_digest()
    upstream = getattr(lucid.models, name)(**FACTORY_KWARGS[name])  # upstream's own factory
    assert package_digest() == digest  # the registry patch: no write into site-packages

    port = lucid_inception.build(name, **FACTORY_KWARGS[name])
    assert {k: v.shape for k, v in LucidAdapter.state(upstream).items()} == {
        k: v.shape for k, v in LucidAdapter.state(port).items()
    }
    randomize_batchnorm(port, seed=8)
    upstream.load_state_dict(LucidAdapter.state(port))  # upstream's own (patched) loader
    LucidAdapter.cast(upstream, "float32")
    x = image((2, 3, 75, 75), seed=9)
    np.testing.assert_allclose(run(upstream, x), run(port, x), rtol=1e-5, atol=1e-6)
    assert upstream.dropout.p == pytest.approx(0.2)


def test_port_model_pickles_on_the_patched_lucid() -> None:
    # LUC-016's patch: a model goes through pickle (multiprocessing, joblib) with its values
    # and dtypes; on Lucid as released pickle.dumps raises on any tensor
    port = lucid_inception.build("inception_resnet_v1")
    randomize_batchnorm(port, seed=3)
    again = pickle.loads(pickle.dumps(port))
    x = image((1, 3, 75, 75), seed=4)
    np.testing.assert_array_equal(run(again, x), run(port, x))
    assert again.fc.weight.dtype is lucid.Float32
