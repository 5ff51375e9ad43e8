"""The engine's optimizer: torch's fused AdamW where it exists, the same update as the plain one."""

from __future__ import annotations

import torch

from coreward_cli.engines.optim import build_optimizer


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((64, 32), (32,), (7,))
    ]


def _grads(steps: int) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(99)
    return [[torch.randn(p.shape, generator=g) for p in _params(0)] for _ in range(steps)]


def _build(params):
    return build_optimizer(
        params,
        lr=1e-2,
        betas=(0.9, 0.99),
        weight_decay=0.01,
        total_steps=6,
        warmup_ratio=0.34,
        schedule="cosine",
        min_lr_ratio=0.1,
    )


def _run(params, optimizer, scheduler, grads) -> None:
    for step_grads in grads:
        for p, grad in zip(params, step_grads):
            p.grad = grad.clone()
        optimizer.step()
        scheduler.step()


def test_fused_adamw_on_cpu_makes_the_plain_adamw_update():
    params = _params(0)
    optimizer, scheduler = _build(params)
    assert optimizer.param_groups[0]["fused"] is True
    reference_params = _params(0)
    reference = torch.optim.AdamW(
        reference_params, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.01, eps=1e-8, foreach=False
    )
    ref_scheduler = torch.optim.lr_scheduler.LambdaLR(reference, scheduler.lr_lambdas[0])
    grads = _grads(6)
    _run(params, optimizer, scheduler, grads)
    _run(reference_params, reference, ref_scheduler, grads)
    for p, r, initial in zip(params, reference_params, _params(0)):
        assert not torch.equal(p, initial)  # it moved
        torch.testing.assert_close(p, r, rtol=1e-6, atol=1e-6)


def test_optimizer_state_restores_bit_for_bit():
    """A resumed run loads the optimizer's state_dict: it must continue exactly as without the stop."""
    grads = _grads(6)
    straight = _params(0)
    optimizer, scheduler = _build(straight)
    _run(straight, optimizer, scheduler, grads)

    first = _params(0)
    optimizer, scheduler = _build(first)
    _run(first, optimizer, scheduler, grads[:3])
    state = (optimizer.state_dict(), scheduler.state_dict())
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in first]
    optimizer, scheduler = _build(resumed)
    optimizer.load_state_dict(state[0])
    scheduler.load_state_dict(state[1])
    _run(resumed, optimizer, scheduler, grads[3:])
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_non_float_or_unusual_devices_fall_back_to_the_plain_adamw():
    params = [torch.nn.Parameter(torch.zeros(3, device="meta"))]
    optimizer, _ = _build(params)
    assert not optimizer.param_groups[0]["fused"]
