"""features.vector: a fixed length, finite, deterministic, and it sees every knob; the
corpus CSV keeps the knobs it learns from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from amk_tune.model.presets import PRESETS
from amk_tune.targets import get_target
from prior.corpus import COLUMNS, CORPUS_PATH, context_fields, knob_fields, read_corpus
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


def test_the_rings_move_the_vector():
    assert not np.array_equal(vector(row(lm_ring=2, ring_prefill=True)),
                              vector(row(lm_ring=2, ring_prefill=False)))
    assert not np.array_equal(vector(row(ring=2, ring_pairs=True, ring_prefill=False)),
                              vector(row(ring=2, ring_pairs=False, ring_prefill=False)))
    assert vector(row(ring=2, ring_pairs=False, ring_prefill=True))[
        FEATURES.index("ring_prefill")] == 1.0


def test_ring_prefill_round_trips_through_the_corpus_csv(tmp_path):
    """A row written with ``ring_prefill`` reads back with it; a corpus written before the
    knob existed reads as ``ring_prefill = False`` (LATER_COLUMNS)."""
    rows = pd.DataFrame([{**row(ring=2, ring_pairs=False, ring_prefill=prefill),
                          "study": "s", "trial": n, "state": "complete"}
                         for n, prefill in enumerate((True, False))], columns=list(COLUMNS))
    path = tmp_path / "corpus.csv"
    rows.to_csv(path, index=False)
    back = read_corpus(path)
    assert list(back["ring_prefill"]) == [True, False]
    assert np.array_equal(matrix(back), matrix(rows))
    rows.drop(columns="ring_prefill").to_csv(path, index=False)
    older = read_corpus(path)
    assert list(older["ring_prefill"]) == [False, False]
    assert matrix(older)[:, FEATURES.index("ring_prefill")].tolist() == [0.0, 0.0]
