"""Each schedule knob alone keeps the answer right: greedy tokens and every step's logits
of the tiny model agree with HF eager under every variant, in a random interleaving."""

from __future__ import annotations

import pytest

from amk_tune.oracle import compare, hf_reference
from amk_tune.targets import get_target
from tests.conftest import TINY_UNTIED
from tests.vm.test_lowering import KNOB_VARIANTS
from vm.decode import cpu_runner, greedy_generate

PROMPT = [5, 60, 2]


@pytest.fixture(scope="module")
def reference(tiny_untied):
    return hf_reference(tiny_untied, PROMPT, 5)


@pytest.mark.parametrize("knob", sorted(KNOB_VARIANTS))
def test_knob_keeps_the_answer(knob, tiny_untied, reference):
    assert tiny_untied.spec == TINY_UNTIED
    gen = greedy_generate(tiny_untied, KNOB_VARIANTS[knob], get_target("h100"), PROMPT, 5,
                          cpu_runner(tiny_untied, seed=11))
    verdict = compare(reference, gen.tokens, gen.logits)
    assert verdict.passed, f"{knob}: {verdict.message}"
