"""Scoring responses: the chunked selective log-softmax equals the naive full-vocabulary
formula in value and gradient (both outputs, any temperature, suppressed ids, any chunk
size), and a model computes logits only for the positions read."""

from __future__ import annotations

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import maple_rl.algorithms.logprobs as logprobs
from maple_data.models.heads import logits_for
from maple_rl.algorithms.logprobs import selective_log_softmax, token_logprobs


def naive(logits: torch.Tensor, tokens: torch.Tensor, temperature: float, suppressed: tuple[int, ...]):
    """The formula as written: log-softmax over the whole vocabulary in float64."""
    z = logits.double() / temperature
    if suppressed:
        z[..., list(suppressed)] = -1e9
    log_p = torch.log_softmax(z, dim=-1)
    return log_p.gather(-1, tokens[..., None]).squeeze(-1), -(log_p.exp() * log_p).sum(-1)


@settings(max_examples=40, deadline=None)
@example(n=3, t=4, vocab=3, chunk=1, temperature=0.6, n_suppressed=0, seed=224)  # float32 rounding reached 2.3e-5
@given(n=st.integers(1, 3), t=st.integers(1, 5), vocab=st.integers(3, 40), chunk=st.integers(1, 200),
       temperature=st.sampled_from([1.0, 0.6, 1.7]), n_suppressed=st.integers(0, 2), seed=st.integers(0, 10_000))
def test_values_and_gradients_equal_the_naive_formula(n, t, vocab, chunk, temperature, n_suppressed, seed):
    torch.manual_seed(seed)
    suppressed = tuple(range(vocab - n_suppressed, vocab))
    logits = (3 * torch.randn(n, t, vocab, dtype=torch.float64)).requires_grad_()
    tokens = torch.randint(0, vocab - n_suppressed, (n, t))
    weights = torch.randn(2, n, t, dtype=torch.float64)
    original, logprobs.CHUNK_ELEMENTS = logprobs.CHUNK_ELEMENTS, chunk  # chunks of a few rows, or one
    try:
        logp, entropy = selective_log_softmax(logits, tokens, temperature, suppressed)
        (weights[0] * logp + weights[1] * entropy).sum().backward()
    finally:
        logprobs.CHUNK_ELEMENTS = original
    ours = logits.grad.clone()
    logits.grad = None
    expected_logp, expected_entropy = naive(logits, tokens, temperature, suppressed)
    (weights[0] * expected_logp + weights[1] * expected_entropy).sum().backward()
    assert logp.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(logp.double(), expected_logp, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=2e-5, rtol=1e-5)
    # float32 gradients against float64 ones: the entropy term's log p (down to ~ -40 at these
    # logits, over a temperature of 0.6) times float32's 1.2e-7 reaches ~2e-5 (seed 224 did)
    torch.testing.assert_close(ours, logits.grad, atol=1e-4, rtol=1e-5)
    assert (ours[..., list(suppressed)] == 0).all()


def test_by_hand_and_in_bfloat16():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25]]]))  # p = (1/2, 1/4, 1/4)
    logp, entropy = selective_log_softmax(logits, torch.tensor([[1]]))
    assert logp.item() == pytest.approx(-1.3862944) and entropy.item() == pytest.approx(1.0397208)  # 1.5 ln 2
    logp, _ = selective_log_softmax(logits, torch.tensor([[1]]), suppressed=(0,))  # then p = (0, 1/2, 1/2)
    assert logp.item() == pytest.approx(-0.6931472)
    half = torch.randn(2, 3, 50).to(torch.bfloat16).requires_grad_()
    logp, _ = selective_log_softmax(half, torch.zeros(2, 3, dtype=torch.long))
    logp.sum().backward()
    assert half.grad.dtype == torch.bfloat16 and half.grad.shape == half.shape
    with pytest.raises(ValueError, match="disagree"):
        selective_log_softmax(half, torch.zeros(2, 4, dtype=torch.long))


def test_a_model_computes_logits_only_for_the_positions_read(tiny_omni):
    from maple_data.models.families import omni_family
    from maple_data.models.omni_inputs import OmniEncoder
    from maple_data.models.prompts import Prompt

    model = omni_family(str(tiny_omni)).load_thinker(str(tiny_omni), dtype=torch.float32)
    encoder = OmniEncoder(str(tiny_omni))
    inputs = encoder.encode([Prompt([{"role": "user", "content": [{"type": "text", "text": "What colour?"}]}])])
    responses = torch.tensor([[11, 12, 13]])
    full = {"input_ids": torch.cat([inputs["input_ids"], responses], 1),
            "attention_mask": torch.cat([inputs["attention_mask"], torch.ones_like(responses)], 1)}
    everything = model(**full).logits
    with logits_for(model, -4, -1):
        window = model(**full).logits
    assert window.shape == (1, 3, everything.shape[-1])
    torch.testing.assert_close(window, everything[:, -4:-1])
    assert model(**full).logits.shape == everything.shape  # the hook is gone after the block
    scores = token_logprobs(model, inputs, responses)
    expected, _ = naive(everything[:, -4:-1], responses, 1.0, ())
    torch.testing.assert_close(scores.logp.double(), expected, atol=1e-5, rtol=1e-5)
    assert scores.router_aux_loss is None
