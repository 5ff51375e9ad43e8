"""Reward methods, pinned to the paper case by case: who labels whom, empties, ties, metrics, registry."""

from __future__ import annotations

import textwrap

import pytest

from coreward_plugins.batch import Group, RolloutBatch
from coreward_plugins.methods import available_methods, get_method
from coreward_plugins.methods.base import Method, MethodOptions

NO_ANSWER = "I am not sure, let me think again."


def response(answer: str | None) -> str:
    return NO_ANSWER if answer is None else f"Let's compute. The answer is \\boxed{{{answer}}}."


def group(
    pid: str,
    view: str,
    source: str,
    answers: list[str | None],
    reference: str | None = None,
    **stats,
) -> Group:
    return Group(
        pid,
        view,
        source,
        f"prompt {pid} {view}",
        [response(a) for a in answers],
        reference,
        **stats,
    )  # type: ignore[arg-type]


def score(name: str, groups: list[Group], **options):
    method = get_method(name)(MethodOptions(**options))
    return method.score(RolloutBatch(groups))


# ---------------------------------------------------------------- who labels whom


def test_co_rewarding_i_cross_view_labels() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("p1", "original", "policy", ["1", "1", "2", None]),
            group("p1", "rephrased", "policy", ["2", "2", "1", "3"]),
        ],
    )
    # the original view is rewarded by the rephrased majority ("2"), and vice versa ("1")
    assert result.pseudo_labels == ["2", "1"]
    assert result.rewards == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]


def test_co_rewarding_i_pairs_by_problem_not_by_position() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("a", "original", "policy", ["1", "1"]),
            group("b", "original", "policy", ["7", "8"]),
            group("b", "rephrased", "policy", ["8", "8"]),
            group("a", "rephrased", "policy", ["1", "3"]),
        ],
    )
    assert result.pseudo_labels == ["1", "8", "7", "1"]
    assert result.rewards == [[1.0, 1.0], [0.0, 1.0], [0.0, 0.0], [1.0, 0.0]]


def test_a_problem_twice_in_a_batch_pairs_occurrence_by_occurrence() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("a", "original", "policy", ["1", "1"]),
            group("a", "rephrased", "policy", ["2", "2"]),
            group("a", "original", "policy", ["3", "1"]),
            group("a", "rephrased", "policy", ["3", "3"]),
        ],
    )
    assert result.pseudo_labels == ["2", "1", "3", "3"]
    assert result.rewards == [[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]


def test_co_rewarding_i_missing_view_is_an_error() -> None:
    with pytest.raises(ValueError, match="no policy group in the rephrased view"):
        score("co_rewarding_i", [group("p1", "original", "policy", ["1"])])


def test_no_answers_are_excluded_from_the_vote_and_never_rewarded() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("p", "original", "policy", [None, "5", "5", None]),
            group("p", "rephrased", "policy", [None, None, None, "5"]),  # 3 no-answers, 1 vote
        ],
    )
    assert result.pseudo_labels == ["5", "5"]
    assert result.rewards == [[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def test_blank_boxed_answer_counts_as_no_answer() -> None:
    result = score("majority_vote", [group("p", "original", "policy", ["", "", "", "4"])])
    assert result.pseudo_labels == ["4"]
    assert result.rewards == [[0.0, 0.0, 0.0, 1.0]]


def test_empty_label_gives_the_group_zeros() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("p", "original", "policy", ["3", "3", "3"]),
            group("p", "rephrased", "policy", [None, None, None]),
        ],
    )
    # the original group has no label (no rephrased answer); the rephrased one is labelled "3" but has no answers
    assert result.pseudo_labels == [None, "3"]
    assert result.rewards == [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_ties_go_to_the_answer_counted_first() -> None:
    result = score(
        "majority_vote",
        [
            group("a", "original", "policy", ["3", "4", "4", "3"]),
            group("b", "original", "policy", ["4", "3", "3", "4"]),
            group("c", "original", "policy", [None, "9", "8"]),
        ],
    )
    assert result.pseudo_labels == ["3", "4", "9"]
    assert result.rewards == [[1.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def test_tie_none_gives_no_label() -> None:
    result = score(
        "majority_vote",
        [
            group("a", "original", "policy", ["3", "4", "4", "3"]),
            group("b", "original", "policy", ["3", "4", "4"]),
        ],
        tie="none",
    )
    assert result.pseudo_labels == [None, "4"]
    assert result.rewards == [[0.0] * 4, [0.0, 1.0, 1.0]]


def test_min_votes() -> None:
    groups = [
        group("a", "original", "policy", ["7", "7", "8"]),
        group("b", "original", "policy", ["7", "7", "7", "8"]),
    ]
    result = score("majority_vote", groups, min_votes=3)
    assert result.pseudo_labels == [None, "7"]
    assert result.rewards == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
    assert score("majority_vote", groups).pseudo_labels == ["7", "7"]  # paper default: min_votes 1


def test_majority_vote_labels_each_group_by_itself() -> None:
    result = score(
        "majority_vote",
        [
            group("p", "original", "policy", ["1", "2", "2"]),
            group("q", "original", "policy", ["6", "6", "1"]),
        ],
    )
    assert result.pseudo_labels == ["2", "6"]
    assert result.rewards == [[0.0, 1.0, 1.0], [1.0, 1.0, 0.0]]


def test_co_rewarding_ii_uses_the_teachers_majority() -> None:
    result = score(
        "co_rewarding_ii",
        [
            group("p", "original", "policy", ["1", "1", "1", "2"]),  # its own majority would be "1"
            group("p", "original", "teacher", ["2", "2", "1", None]),
        ],
    )
    assert result.pseudo_labels == ["2", None]
    assert result.rewards == [[0.0, 0.0, 0.0, 1.0], []]  # teacher groups are never trained on


def test_co_rewarding_ii_empty_teacher_vote_gives_zeros() -> None:
    result = score(
        "co_rewarding_ii",
        [
            group("p", "original", "policy", ["1", "1"]),
            group("p", "original", "teacher", [None, None]),
        ],
    )
    assert result.pseudo_labels == [None, None]
    assert result.rewards == [[0.0, 0.0], []]


def test_co_rewarding_iii_labels_each_view_by_the_teachers_other_view() -> None:
    result = score(
        "co_rewarding_iii",
        [
            group("p", "original", "policy", ["1", "2", "3", "4"]),
            group("p", "rephrased", "policy", ["1", "2", "3", "4"]),
            group("p", "original", "teacher", ["3", "3", "1"]),
            group("p", "rephrased", "teacher", ["4", "2", "4"]),
        ],
    )
    # policy original <- teacher rephrased ("4"); policy rephrased <- teacher original ("3")
    assert result.pseudo_labels == ["4", "3", None, None]
    assert result.rewards == [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0], [], []]


def test_gt_rewards_against_the_reference() -> None:
    result = score(
        "gt",
        [group("p", "original", "policy", ["12", "13", None, "12"], reference="12")],
    )
    assert result.pseudo_labels == ["12"]
    assert result.rewards == [[1.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="no reference"):
        score("gt", [group("p", "original", "policy", ["12"])])


def test_label_free_methods_never_read_references_for_rewards() -> None:
    def batch(reference: str | None) -> list[Group]:
        return [
            group("p", "original", "policy", ["1", "2", "2"], reference=reference),
            group("p", "rephrased", "policy", ["2", "1", "1"], reference=reference),
            group("p", "original", "teacher", ["1", "1", "2"], reference=reference),
            group("p", "rephrased", "teacher", ["2", "2", "1"], reference=reference),
        ]

    for name in ("majority_vote", "co_rewarding_i", "co_rewarding_ii", "co_rewarding_iii"):
        with_ref, wrong_ref, no_ref = (score(name, batch(r)) for r in ("1", "2", None))
        assert with_ref.rewards == wrong_ref.rewards == no_ref.rewards
        assert with_ref.pseudo_labels == wrong_ref.pseudo_labels == no_ref.pseudo_labels


# ---------------------------------------------------------------- matching modes


def test_matcher_mode_changes_the_clusters() -> None:
    groups = [
        group(
            "p",
            "original",
            "policy",
            ["\\frac12", "0.5", "0.5", "\\frac{1}{2}", "7"],
            reference="\\frac{1}{2}",
        )
    ]
    exact = score("majority_vote", groups, match="exact")
    assert exact.pseudo_labels == ["0.5"]
    assert exact.rewards == [[0.0, 1.0, 1.0, 0.0, 0.0]]
    assert exact.metrics["clusters_per_group"] == 4.0
    assert exact.metrics["pseudo_label_accuracy"] == 0.0  # "0.5" is not the string "\frac{1}{2}"

    normalized = score("majority_vote", groups, match="normalized")
    assert normalized.pseudo_labels == [
        "\\frac12"
    ]  # one cluster of 4; the first-seen spelling names it
    assert normalized.rewards == [[1.0, 1.0, 1.0, 1.0, 0.0]]
    assert normalized.metrics["clusters_per_group"] == 2.0
    assert normalized.metrics["pseudo_label_accuracy"] == 1.0


def test_math_verify_mode_clusters_equivalent_expressions() -> None:
    groups = [
        group(
            "p",
            "original",
            "policy",
            ["x^2+2x+1", "(x+1)^2", "(x+1)^2", "x+1"],
            reference="(x+1)^2",
        )
    ]
    normalized = score("majority_vote", groups, match="normalized")
    assert normalized.pseudo_labels == ["(x+1)^2"]
    assert normalized.rewards == [[0.0, 1.0, 1.0, 0.0]]
    assert normalized.metrics["clusters_per_group"] == 3.0
    verified = score("majority_vote", groups, match="math_verify")
    assert verified.pseudo_labels == [
        "x^2+2x+1"
    ]  # one cluster of 3, named by its first-seen member
    assert verified.rewards == [[1.0, 1.0, 1.0, 0.0]]
    assert verified.metrics["clusters_per_group"] == 2.0
    assert verified.metrics["pseudo_label_accuracy"] == 1.0


def test_extraction_fallbacks_are_honoured() -> None:
    plain = Group("p", "original", "policy", "q", ["so #### 42", "so #### 42", "\\boxed{41}"])
    assert score("majority_vote", [plain]).rewards == [[0.0, 0.0, 1.0]]
    assert score("majority_vote", [plain], extract_fallbacks=("gsm8k",)).rewards == [
        [1.0, 1.0, 0.0]
    ]


# ---------------------------------------------------------------- metrics, hand-computed


def test_metrics_of_a_co_rewarding_i_batch() -> None:
    result = score(
        "co_rewarding_i",
        [
            group("a", "original", "policy", ["1", "1", "2", None], reference="1"),
            group("a", "rephrased", "policy", ["1", "1", "1", "3"], reference="1"),
            group("b", "original", "policy", ["5", "6", "6", "6"], reference="5"),
            group("b", "rephrased", "policy", [None, None, None, None], reference="5"),
        ],
    )
    # labels: a/orig <- "1" (3 of 4), a/reph <- "1" (2 of 3 valid), b/orig <- none, b/reph <- "6" (3 of 4)
    assert result.pseudo_labels == ["1", "1", None, "6"]
    assert result.rewards == [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.0] * 4, [0.0] * 4]
    m = result.metrics
    assert m["reward_mean"] == pytest.approx(5 / 16)
    assert m["label_rate"] == pytest.approx(3 / 4)
    assert m["pseudo_label_accuracy"] == pytest.approx(2 / 3)  # "1"=="1", "1"=="1", "6"!="5"
    assert m["no_answer_share"] == pytest.approx(5 / 16)
    # the voting groups are all four, but b/rephrased had no answer to vote with
    assert m["agreement_share"] == pytest.approx((2 / 3 + 3 / 4 + 3 / 4) / 3)
    assert m["clusters_per_group"] == pytest.approx((2 + 2 + 2 + 0) / 4)
    assert m["reference_accuracy"] == pytest.approx((2 + 3 + 1 + 0) / 16)


def test_metrics_of_a_co_rewarding_ii_batch_count_only_policy_groups() -> None:
    result = score(
        "co_rewarding_ii",
        [
            group("a", "original", "policy", ["4", "4", "9", "9"]),
            group("a", "original", "teacher", ["9", "9", "9", "4"]),
            group("b", "original", "policy", ["2", None, "2", "2"]),
            group("b", "original", "teacher", ["3", "2", "3", None]),
        ],
    )
    assert result.rewards == [[0.0, 0.0, 1.0, 1.0], [], [0.0, 0.0, 0.0, 0.0], []]
    m = result.metrics
    assert m["reward_mean"] == pytest.approx(2 / 8)
    assert m["no_answer_share"] == pytest.approx(1 / 8)
    assert m["label_rate"] == 1.0
    assert m["agreement_share"] == pytest.approx((3 / 4 + 2 / 3) / 2)  # the teacher groups voted
    assert m["clusters_per_group"] == pytest.approx((2 + 1) / 2)
    assert "pseudo_label_accuracy" not in m and "reference_accuracy" not in m  # no references given


# ---------------------------------------------------------------- label-free baselines


def test_self_certainty_rewards_are_the_raw_values() -> None:
    result = score(
        "self_certainty",
        [
            group("p", "original", "policy", ["1", None, "2"], self_certainty=[2.5, 0.75, 1.0]),
            group("p", "original", "teacher", ["1"]),
        ],
    )
    assert result.rewards == [
        [2.5, 0.75, 1.0],
        [],
    ]  # the no-answer response is rewarded like any other
    assert result.pseudo_labels == [None, None]
    assert result.metrics["reward_mean"] == pytest.approx(4.25 / 3)
    assert result.metrics["no_answer_share"] == pytest.approx(1 / 3)
    assert "label_rate" not in result.metrics


def test_entropy_rewards_are_minus_the_mean_entropy() -> None:
    result = score("entropy", [group("p", "original", "policy", ["1", "2"], entropy=[0.5, 2.0])])
    assert result.rewards == [[-0.5, -2.0]]
    assert result.pseudo_labels == [None]


def test_token_stats_must_be_filled() -> None:
    with pytest.raises(ValueError, match="needs Group.entropy"):
        score("entropy", [group("p", "original", "policy", ["1", "2"])])
    with pytest.raises(ValueError, match="needs Group.self_certainty"):
        score(
            "self_certainty", [group("p", "original", "policy", ["1", "2"], self_certainty=[1.0])]
        )


def test_random_is_a_reproducible_coin() -> None:
    groups = [group(f"p{i}", "original", "policy", ["1"] * 8) for i in range(25)]
    batch = RolloutBatch(groups)
    first = get_method("random")(MethodOptions(seed=3))
    runs = [first.score(batch).rewards for _ in range(3)]
    flat = [r for g in runs[0] for r in g]
    assert set(flat) == {0.0, 1.0}
    assert 0.4 < sum(flat) / len(flat) < 0.6  # 200 fair flips
    assert runs[0] != runs[1] != runs[2]  # a new coin every step
    again = get_method("random")(MethodOptions(seed=3))
    assert [again.score(batch).rewards for _ in range(3)] == runs  # the same run twice
    other_seed = get_method("random")(MethodOptions(seed=4))
    assert other_seed.score(batch).rewards != runs[0]
    # a resumed run continues the same sequence
    resumed = get_method("random")(MethodOptions(seed=3))
    resumed.load_state_dict(first.state_dict() | {"calls": 2})
    assert resumed.score(batch).rewards == runs[2]


def test_random_ignores_the_responses() -> None:
    a = get_method("random")(MethodOptions(seed=1)).score(
        RolloutBatch([group("p", "original", "policy", ["1"] * 8)])
    )
    b = get_method("random")(MethodOptions(seed=1)).score(
        RolloutBatch([group("p", "original", "policy", [None] * 8)])
    )
    assert a.rewards == b.rewards


# ---------------------------------------------------------------- declarations and registry


BUILTIN = [
    "gt",
    "majority_vote",
    "co_rewarding_i",
    "co_rewarding_ii",
    "co_rewarding_iii",
    "self_certainty",
    "entropy",
    "random",
]


@pytest.mark.parametrize("name", BUILTIN)
def test_declarations_are_what_scoring_needs(name: str) -> None:
    """The engine samples what a method declares: enough to score, every policy view trained on,
    every teacher view read for labels, and token statistics exactly when they are used."""
    cls = get_method(name)
    assert cls.name == name
    assert cls.needs_teacher == bool(cls.teacher_views)  # teacher rollouts need a teacher
    parts = [("policy", v) for v in cls.policy_views] + [("teacher", v) for v in cls.teacher_views]
    stats = {"entropy": [0.5, 1.0], "self_certainty": [1.0, 2.0]}

    def batch(drop=None, with_stats=cls.needs_token_stats) -> RolloutBatch:
        return RolloutBatch(
            [
                group("p", view, source, ["1", "2"], reference="1", **(stats if with_stats else {}))
                for source, view in parts
                if (source, view) != drop
            ]
        )

    result = cls().score(batch())
    assert [len(r) for r in result.rewards] == [2 if s == "policy" else 0 for s, _ in parts]
    for part in parts:
        if part[0] == "teacher":
            with pytest.raises(ValueError, match="no teacher group"):
                cls().score(batch(drop=part))
    if cls.needs_token_stats:
        with pytest.raises(ValueError, match="needs Group"):
            cls().score(batch(with_stats=False))


def test_builtin_methods_are_listed_first_in_order() -> None:
    assert available_methods()[:8] == BUILTIN


class ConstantHalf(Method):
    """A third-party method: every policy response gets 0.5."""

    name = "constant_half"

    def score(self, batch: RolloutBatch):
        from coreward_plugins.batch import MethodResult

        rewards = [[0.5] * len(g.responses) if g.source == "policy" else [] for g in batch.groups]
        return MethodResult(rewards, [None] * len(batch.groups), {"reward_mean": 0.5})


def test_third_party_method_by_module_path() -> None:
    cls = get_method(f"{__name__}:ConstantHalf")
    assert cls is ConstantHalf
    result = cls().score(RolloutBatch([group("p", "original", "policy", ["1", "2"])]))
    assert result.rewards == [[0.5, 0.5]]


def test_third_party_method_by_entry_point(tmp_path, monkeypatch) -> None:
    (tmp_path / "fake_rewards.py").write_text(
        textwrap.dedent(
            """
            from coreward_plugins.methods.majority_vote import MajorityVote

            class Stricter(MajorityVote):
                name = "stricter"
            """
        )
    )
    dist = tmp_path / "fake_rewards-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-rewards\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[coreward.methods]\nstricter = fake_rewards:Stricter\nbroken = fake_rewards:Nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "stricter" in available_methods()
    cls = get_method("stricter")
    assert cls.__name__ == "Stricter" and cls.name == "stricter"
    result = cls(MethodOptions(min_votes=2)).score(
        RolloutBatch([group("p", "original", "policy", ["1", "2"])])
    )
    assert result.rewards == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="does not load"):
        get_method("broken")


def test_unknown_and_invalid_methods() -> None:
    with pytest.raises(
        ValueError,
        match="unknown method 'co_rewarding_iv'; available: gt, majority_vote, co_rewarding_i",
    ):
        get_method("co_rewarding_iv")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        get_method("no_such_module_xyz:Thing")
    with pytest.raises(ValueError, match="has no 'Missing'"):
        get_method(f"{__name__}:Missing")
    with pytest.raises(ValueError, match="not a subclass"):
        get_method(f"{__name__}:group")
