"""The FA transport loss against values worked out by hand, and the freezing of the prototypes."""
import math

import pytest
import torch

from nnunet_dfg.trainers.fa_loss import FALossConfig, fa_loss, fa_loss_terms, flatten_features


def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def _reference(features, protos, tau, s, prior):
    """Plain-Python transcription of METHOD.md's formula, loop by loop."""
    K, N = len(protos), len(features)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    norm = lambda a: math.sqrt(dot(a, a))  # noqa: E731
    sim = [[dot(protos[k], features[n]) for n in range(N)] for k in range(K)]
    cost = [[1 - sim[k][n] / (norm(protos[k]) * norm(features[n])) for n in range(N)] for k in range(K)]
    p_cls = [_softmax([sim[k][n] / tau + math.log(prior[k]) for k in range(K)]) for n in range(N)]  # [n][k]
    p_pix = [_softmax([sim[k][n] / tau for n in range(N)]) for k in range(K)]  # [k][n]
    forward = sum(sum(cost[k][n] * p_cls[n][k] for k in range(K)) for n in range(N)) / N
    backward = sum(prior[k] * sum(cost[k][n] * p_pix[k][n] for n in range(N)) for k in range(K))
    return forward, backward, s * forward + (1 - s) * backward


def test_two_pixels_two_classes_by_hand():
    # prototypes e1, e2; pixel features 2*e1 and e2: costs are 0 on the diagonal and 1 off it.
    protos = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    feats = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    a = 1 / (1 + math.e ** 2)  # softmax([2, 0])[1]
    b = 1 / (1 + math.e)  # softmax([0, 1])[0]
    forward, backward = fa_loss_terms(feats, protos)
    assert forward.item() == pytest.approx((a + b) / 2, abs=1e-6)  # 0.19405
    assert backward.item() == pytest.approx(0.5 * a + 0.5 * b, abs=1e-6)
    assert fa_loss(feats, protos).item() == pytest.approx((a + b) / 2, abs=1e-6)


@pytest.mark.parametrize("tau,s,prior", [(1.0, 0.5, (1 / 3, 1 / 3, 1 / 3)), (0.5, 0.8, (0.6, 0.3, 0.1))])
def test_matches_formula_with_prior_and_temperature(tau, s, prior):
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(3, 4, generator=g, dtype=torch.float64)
    feats = torch.randn(7, 4, generator=g, dtype=torch.float64)
    expected = _reference(feats.tolist(), protos.tolist(), tau, s, prior)
    forward, backward = fa_loss_terms(feats, protos, tau, torch.tensor(prior, dtype=torch.float64))
    loss = fa_loss(feats, protos, FALossConfig(tau=tau, s=s, prior=prior))
    assert forward.item() == pytest.approx(expected[0], rel=1e-9)
    assert backward.item() == pytest.approx(expected[1], rel=1e-9)
    assert loss.item() == pytest.approx(expected[2], rel=1e-9)


def test_flatten_keeps_pixels_as_rows():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    flat = flatten_features(x)
    assert flat.shape == (8, 3)
    assert torch.equal(flat[5], x[1, :, 0, 1])


def test_gradient_flows_to_features_and_only_to_prototypes_that_require_it():
    protos = torch.randn(3, 4, requires_grad=False)
    feats = torch.randn(10, 4, requires_grad=True)
    fa_loss(feats, protos).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert protos.grad is None
    # The loss does depend on the prototypes: freezing them is what keeps them fixed.
    protos.requires_grad_(True)
    fa_loss(feats.detach(), protos).backward()
    assert protos.grad.abs().sum() > 0
