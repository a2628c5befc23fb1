"""features.vector: a fixed length, finite, deterministic, and it sees every knob."""

from __future__ import annotations

import numpy as np
import pandas as pd

from amk_tune.model.presets import PRESETS
from amk_tune.targets import get_target
from prior.corpus import CORPUS_PATH, context_fields, knob_fields, read_corpus
from prior.features import FEATURES, matrix, vector
from space.search_space import candidate_of, default_params


def row(**knobs):
    cand = candidate_of({**default_params(), **knobs}, get_target("h200"))
    return {**context_fields(PRESETS["smollm2-135m"], get_target("h200"), "bf16"),
            **knob_fields(cand)}


def test_shape_and_stability():
    v = vector(row())
    assert v.shape == (len(FEATURES),) and np.isfinite(v).all()
    assert np.array_equal(v, vector(row()))
    corpus = read_corpus(CORPUS_PATH)
    m = matrix(corpus)
    assert m.shape == (len(corpus), len(FEATURES)) and np.isfinite(m).all()
    assert matrix(pd.DataFrame()).shape == (0, len(FEATURES))


def test_every_knob_and_the_gpu_move_the_vector():
    base = vector(row())
    for change in ({"threads": 512}, {"split_kv": 2}, {"sm_policy": "blocked"},
                   {"smem_bytes": 131072}, {"rows_per_warp": 2}, {"unroll": 4},
                   {"spin_sleep_ns": 0}, {"steps_per_launch": 4}, {"blocks_per_sm": 2},
                   {"tiles_mode": "custom", "tiles": 64}):
        assert not np.array_equal(vector(row(**change)), base), change
    other_gpu = {**row(), **context_fields(PRESETS["smollm2-135m"], get_target("h100"), "bf16")}
    assert not np.array_equal(vector(other_gpu), base)
