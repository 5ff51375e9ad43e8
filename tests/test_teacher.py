"""The EMA teacher: the official cosine decay schedule, the fp32 EMA, the weight swap."""

from __future__ import annotations

import math

import pytest
import torch

from coreward_plugins.teacher import EmaTeacher, decay_at

torch.set_num_threads(1)


def test_decay_schedule_matches_official_alpha() -> None:
    """Reference §3.3: alpha(t) = 1e-5 + 0.5 (0.01 - 1e-5)(1 + cos(pi t / T)), t = clamp(step - 1, 0, T),
    decay = 1 - alpha; by hand at T = 330 where the cosine is exact (t = 0, T/3, T/2, 2T/3, T)."""
    by_hand = {
        -3: 0.99,  # t clamps to 0
        0: 0.99,
        1: 0.99,  # t = 0: cos 0 = 1, alpha = 0.01
        111: 0.9924975,  # t = T/3: cos = 1/2, alpha = 1e-5 + 0.004995 * 1.5
        166: 0.994995,  # t = T/2: cos = 0, alpha = 1e-5 + 0.004995
        221: 0.9974925,  # t = 2T/3: cos = -1/2, alpha = 1e-5 + 0.004995 * 0.5
        331: 0.99999,  # t = T: cos = -1, alpha = 1e-5
        400: 0.99999,  # t clamps to T
    }
    for step, decay in by_hand.items():
        assert decay_at(step, 330, 0.99, 0.99999) == pytest.approx(decay, abs=1e-12), step


def test_decay_endpoints_and_monotone() -> None:
    total = 174
    assert decay_at(1, total, 0.99, 0.99999) == pytest.approx(0.99, abs=1e-15)
    last = decay_at(total, total, 0.99, 0.99999)
    assert 0.999985 < last < 0.99999  # one notch before decay_end, which step T + 1 would reach
    assert decay_at(total + 1, total, 0.99, 0.99999) == pytest.approx(0.99999, abs=1e-15)
    values = [decay_at(s, total, 0.99, 0.99999) for s in range(1, total + 1)]
    assert all(b > a for a, b in zip(values, values[1:]))
    # the whole run keeps about 0.42 of the initial weights in the teacher (reference §3.3, MATH)
    assert math.prod(values) == pytest.approx(0.42, abs=0.01)


def test_constant_schedule_and_errors() -> None:
    assert decay_at(1, 10, 0.995, 0.99999, "constant") == 0.995
    assert decay_at(10, 10, 0.995, 0.99999, "constant") == 0.995
    with pytest.raises(ValueError, match="schedule"):
        decay_at(1, 10, 0.99, 0.999, "linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps"):
        decay_at(1, 0, 0.99, 0.999)


def tiny_module(dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).to(
        dtype
    )


def test_ema_equals_hand_computed_fp32() -> None:
    module = tiny_module()
    teacher = EmaTeacher.from_module(module)
    expected = {n: p.detach().clone() for n, p in module.named_parameters()}
    # step 1 mixes theta_0 with theta_0: the teacher still equals the base model
    teacher.update(module.named_parameters(), decay_at(1, 5, 0.9, 0.99))
    for name, value in teacher.state_dict().items():
        assert torch.equal(value, expected[name])
    for step in range(2, 6):
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.1)
        decay = decay_at(step, 5, 0.9, 0.99)
        teacher.update(dict(module.named_parameters()), decay)
        for n, p in module.named_parameters():
            expected[n] = decay * expected[n] + (1 - decay) * p.detach()
    for name, value in teacher.state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected[name], rtol=1e-6, atol=1e-7)
    # and it really moved away from the base model and is not the policy either
    final = dict(module.named_parameters())
    assert not torch.allclose(teacher.state_dict()["0.weight"], final["0.weight"])


def test_ema_does_not_stall_with_bf16_params() -> None:
    module = tiny_module(torch.bfloat16)
    teacher = EmaTeacher.from_module(module)
    start = {n: v.clone() for n, v in teacher.state_dict().items()}
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.25)
    target = {n: p.detach().float() for n, p in module.named_parameters()}
    steps, decay = 100, 0.99999
    for _ in range(steps):
        teacher.update(module.named_parameters(), decay)
    moved = 1 - decay**steps  # share of the way from the start to the (fixed) policy
    for name, value in teacher.state_dict().items():
        want = start[name] + moved * (target[name] - start[name])
        torch.testing.assert_close(value, want, rtol=0, atol=1e-6)
        assert not torch.equal(value, start[name])
    # the same EMA held in bf16 would not have moved at all
    bf16 = {n: v.to(torch.bfloat16) for n, v in start.items()}
    for _ in range(steps):
        for n in bf16:
            bf16[n] = bf16[n] * decay + target[n].to(torch.bfloat16) * (1 - decay)
    assert all(torch.equal(bf16[n], start[n].to(torch.bfloat16)) for n in bf16)


def test_swap_restores_student_bit_for_bit() -> None:
    student = tiny_module(torch.bfloat16, seed=1)
    teacher = EmaTeacher.from_module(tiny_module(seed=2))
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    x = torch.randn(5, 4).to(torch.bfloat16)
    with teacher.swapped_into(student) as swapped:
        assert swapped is student
        for n, p in student.named_parameters():
            assert p.dtype == torch.bfloat16
            assert torch.equal(p, teacher.state_dict()[n].to(torch.bfloat16))
        inside = student(x)
    reference_teacher = tiny_module(torch.bfloat16, seed=2)
    assert torch.equal(inside, reference_teacher(x))
    for n, p in student.named_parameters():
        assert torch.equal(p, before[n])


def test_swap_restores_on_exception_and_keeps_grad_flags() -> None:
    student = tiny_module(seed=1)
    teacher = EmaTeacher.from_module(tiny_module(seed=2))
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    with pytest.raises(RuntimeError, match="boom"):
        with teacher.swapped_into(student):
            raise RuntimeError("boom")
    for n, p in student.named_parameters():
        assert torch.equal(p, before[n])
        assert p.requires_grad


def test_name_mismatch_is_an_error() -> None:
    teacher = EmaTeacher.from_module(tiny_module())
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match="missing"):
        with teacher.swapped_into(other):
            pass
    with pytest.raises(ValueError, match="names"):
        teacher.update(other.named_parameters(), 0.99)
    wrong_shape = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    with pytest.raises(ValueError, match="shape"):
        teacher.update(wrong_shape.named_parameters(), 0.99)
    with pytest.raises(ValueError, match="decay"):
        teacher.update(tiny_module().named_parameters(), 1.5)


def test_state_dict_round_trip(tmp_path) -> None:
    module = tiny_module()
    teacher = EmaTeacher.from_module(module)
    with torch.no_grad():
        for p in module.parameters():
            p.mul_(1.5)
    teacher.update(module.named_parameters(), 0.9)
    path = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), path)
    restored = EmaTeacher.from_module(tiny_module(seed=5))
    restored.load_state_dict(torch.load(path))
    for name, value in teacher.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)
    # both continue identically
    teacher.update(module.named_parameters(), 0.95)
    restored.update(module.named_parameters(), 0.95)
    for name, value in teacher.state_dict().items():
        assert torch.equal(restored.state_dict()[name], value)
    with pytest.raises(ValueError, match="names"):
        restored.load_state_dict({"0.weight": value})
