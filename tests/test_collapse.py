"""The label-free collapse detector: what fires it, what never does, and that it reads no reference."""

from __future__ import annotations

import random
import subprocess
import sys

from coreward_plugins.collapse import CollapseDetector, label_free_signals


def healthy(step: int, rng: random.Random) -> dict:
    """A run that learns: noisy, entropy easing down a little, agreement rising a little."""
    return {
        "step": step,
        "reward_mean": 0.6 + 0.2 * min(1.0, step / 100) + rng.uniform(-0.1, 0.1),
        "agreement_share": min(0.97, 0.75 + 0.1 * step / 200 + rng.uniform(-0.05, 0.05)),
        "clusters_per_group": 2.2 - 0.5 * step / 200 + rng.uniform(-0.5, 0.5),
        "entropy": 0.06 * (1 - 0.4 * step / 200) * rng.uniform(0.6, 1.4),
        "response_length": 11.5 + rng.uniform(-0.3, 0.3),
        "no_answer_share": rng.choice([0.0, 0.0, 0.0, 0.03]),
    }


def replay(rows: list[dict]) -> CollapseDetector:
    detector = CollapseDetector()
    for row in rows:
        detector.update(row)
    return detector


def test_a_healthy_noisy_run_never_fires():
    for seed in range(5):
        rng = random.Random(seed)
        assert replay([healthy(s, rng) for s in range(1, 301)]).fired_at is None


def test_answers_vanishing_fires_within_a_few_steps_of_the_climb():
    rng = random.Random(0)
    rows = [healthy(s, rng) for s in range(1, 201)]
    for row in rows[59:]:  # from step 60 the policy stops writing answers
        row["no_answer_share"] = min(1.0, 0.02 * (row["step"] - 59))
    detector = CollapseDetector()
    reasons = []
    for row in rows:
        assessment = detector.update(row)
        if assessment.fired and not reasons:
            reasons = assessment.reasons
    assert detector.fired_at is not None and 60 < detector.fired_at <= 90
    assert any("no-answer" in r for r in reasons)


def test_lock_in_unanimous_votes_with_entropy_falling_fires():
    rng = random.Random(1)
    rows = [healthy(s, rng) for s in range(1, 201)]
    for row in rows[49:]:  # from step 50: one answer per group, entropy draining away
        k = row["step"] - 49
        row["agreement_share"] = 1.0
        row["clusters_per_group"] = 1.0
        row["entropy"] = 0.06 * 0.97**k
    detector = replay(rows)
    assert detector.fired_at is not None and 50 < detector.fired_at <= 90


def test_blurring_entropy_and_distinct_answers_rising_fires():
    """What self-certainty does to the tiny model: the policy blurs instead of sharpening."""
    rng = random.Random(5)
    rows = [healthy(s, rng) for s in range(1, 201)]
    for row in rows[20:]:
        k = min(1.0, (row["step"] - 20) / 40)
        row["entropy"] *= 1.0 + 0.6 * k
        row["clusters_per_group"] += 0.8 * k
    detector = CollapseDetector()
    reasons: list[str] = []
    for row in rows:
        assessment = detector.update(row)
        if assessment.fired and not reasons:
            reasons = assessment.reasons
    assert detector.fired_at is not None and 25 < detector.fired_at <= 70
    assert any("blurring" in r for r in reasons)


def test_reference_based_metrics_change_nothing():
    rng = random.Random(2)
    rows = [healthy(s, rng) for s in range(1, 201)]
    with_refs = [
        {
            **r,
            "pseudo_label_accuracy": rng.random(),
            "reference_accuracy": rng.random(),
            "eval_accuracy": rng.random(),
            "eval/arithmetic": 0.0,
        }
        for r in rows
    ]
    a, b = CollapseDetector(), CollapseDetector()
    assert [a.update(r) for r in rows] == [b.update(r) for r in with_refs]
    assert label_free_signals(with_refs[0]).keys() == label_free_signals(rows[0]).keys()


def test_openrlhf_names_read_the_same():
    rng = random.Random(3)
    rows = [healthy(s, rng) for s in range(1, 120)]
    for row in rows[40:]:
        row["no_answer_share"] = 0.5
    renamed = []
    for r in rows:
        row = {"step": r["step"], "entropy_loss": r["entropy"]}
        row["rollout/response_length_mean"] = r["response_length"]
        for key in ("reward_mean", "agreement_share", "clusters_per_group", "no_answer_share"):
            row[f"coreward/{key}"] = r[key]
        renamed.append(row)
    a, b = CollapseDetector(), CollapseDetector()
    assert [a.update(r) for r in rows] == [b.update(r) for r in renamed]
    assert a.fired_at is not None


def test_state_dict_continues_exactly():
    rng = random.Random(4)
    rows = [healthy(s, rng) for s in range(1, 150)]
    for row in rows[70:]:
        row["response_length"] = 4.0
    whole = CollapseDetector()
    expected = [whole.update(r) for r in rows]
    first = CollapseDetector()
    for r in rows[:80]:
        first.update(r)
    second = CollapseDetector()
    second.load_state_dict(first.state_dict())
    assert [second.update(r) for r in rows[80:]] == expected[80:]
    assert second.fired_at == whole.fired_at is not None


def test_the_detector_imports_no_engine():
    code = (
        "import sys, coreward_plugins.collapse; "
        "bad = [m for m in ('torch', 'ray', 'openrlhf', 'coreward_cli') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
