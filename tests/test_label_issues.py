"""Label-error candidates: confidently contradicted labels come first, clean data stays quiet."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

from probe_core.dataset import scan_folder
from probe_core.embed import extract_embeddings
from probe_core.evaluation.label_issues import (
    LabelIssue,
    LowConfidenceLabel,
    find_label_issues,
    label_issues_table,
    low_confidence_table,
    review_labels,
)
from probe_core.evaluation.protocols import run_probe
from tests.conftest import DEMO_DIR


def probe_like_probabilities(true_labels: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Probabilities that favour each row's true class, with some spread like a real probe."""
    rng = np.random.default_rng(seed)
    alpha = np.ones((len(true_labels), n_classes))
    alpha[np.arange(len(true_labels)), true_labels] = 12.0
    return np.stack([rng.dirichlet(row) for row in alpha])


N_CLASSES = 4
TRUE_LABELS = np.repeat(np.arange(N_CLASSES), 15)
MISLABELLED = {7: 2, 22: 3, 40: 0}  # row -> wrong given label


def three_confident_errors() -> tuple[np.ndarray, np.ndarray]:
    """Given labels with three errors, and probabilities sure of the true class on those rows."""
    labels = TRUE_LABELS.copy()
    probabilities = probe_like_probabilities(TRUE_LABELS, N_CLASSES)
    for row, wrong in MISLABELLED.items():
        labels[row] = wrong
        probabilities[row] = 0.02
        probabilities[row, TRUE_LABELS[row]] = 0.94
    return labels, probabilities


def test_confidently_mislabelled_images_are_flagged_first_with_their_true_class():
    labels, probabilities = three_confident_errors()
    issues = find_label_issues(labels, probabilities)

    assert len(issues) <= 4  # the rest of the data is clean
    first_three = issues[:3]
    assert {issue.index for issue in first_three} == set(MISLABELLED)
    for issue in first_three:
        assert issue.given == MISLABELLED[issue.index]
        assert issue.suggested == TRUE_LABELS[issue.index]
        assert issue.probability_given == pytest.approx(probabilities[issue.index, issue.given])
        assert issue.probability_suggested == probabilities[issue.index].max()
        assert issue.score == pytest.approx(0.02)
    scores = [issue.score for issue in issues]
    assert scores == sorted(scores)


def hard_to_tell_apart() -> tuple[np.ndarray, np.ndarray]:
    """Four classes a probe barely separates (self-confidence around 0.4): cleanlab then flags
    more images than those whose most likely class is another, as on the demo and the
    textile folder of issue 17."""
    labels = np.repeat(np.arange(4), 15)
    alpha = np.ones((60, 4))
    alpha[np.arange(60), labels] = 2.0
    rng = np.random.default_rng(1)
    return labels, np.stack([rng.dirichlet(row) for row in alpha])


def test_no_flagged_image_is_said_to_look_like_its_own_class():
    labels, probabilities = hard_to_tell_apart()
    review = review_labels(labels, probabilities)
    assert review.issues and review.low_confidence
    for issue in review.issues:
        assert issue.suggested != issue.given
        assert issue.suggested == probabilities[issue.index].argmax()
    table = label_issues_table(review.issues, [f"{i}.png" for i in range(60)], list("ABCD"))
    assert len(table) == len(review.issues)
    assert not (table["given"] == table["suggested"]).any()
    assert find_label_issues(labels, probabilities) == review.issues


def test_images_still_most_likely_their_own_class_form_the_low_confidence_group():
    labels, probabilities = hard_to_tell_apart()
    review = review_labels(labels, probabilities)
    for item in review.low_confidence:
        assert probabilities[item.index].argmax() == item.given == labels[item.index]
        second = np.argsort(probabilities[item.index])[-2]
        assert item.runner_up == second != item.given
        assert item.probability_runner_up == probabilities[item.index, second]
    assert not {i.index for i in review.issues} & {i.index for i in review.low_confidence}
    scores = [item.score for item in review.low_confidence]
    assert scores == sorted(scores)
    names = list("ABCD")
    table = low_confidence_table(review.low_confidence, [f"{i}.png" for i in range(60)], names)
    assert list(table.columns) == ["path", "given", "runner_up", "score"]
    assert not (table["given"] == table["runner_up"]).any()
    assert LowConfidenceLabel(3, 0, 1, 0.2, 0.36, 0.34).sentence(names) == (
        "labelled A, low confidence (p(A) = 0.36); runner-up B (p(B) = 0.34)"
    )
    assert LabelIssue(3, 0, 2, 0.05, 0.05, 0.81).sentence(names) == (
        "labelled A, looks like C (p(C) = 0.81, p(A) = 0.05)"
    )


def test_a_tie_with_the_given_class_is_low_confidence_not_another_class():
    labels = np.array([0, 0, 0, 1, 1, 1])
    probabilities = np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8], [0.5, 0.5]]
    )
    review = review_labels(labels, probabilities)
    assert all(probabilities[i.index, i.suggested] > 0.5 for i in review.issues)
    assert 5 not in {i.index for i in review.issues}  # labelled 1 at 0.5 vs 0.5


def test_a_label_issue_that_suggests_its_own_class_cannot_be_made():
    with pytest.raises(ValueError, match="another class"):
        LabelIssue(index=0, given=2, suggested=2, score=0.2, probability_given=0.3,
                   probability_suggested=0.3)  # fmt: skip
    assert LowConfidenceLabel(0, 2, 1, 0.2, 0.3, 0.29).runner_up == 1


def test_clean_labels_flag_almost_nothing():
    probabilities = probe_like_probabilities(TRUE_LABELS, N_CLASSES, seed=1)
    assert len(find_label_issues(TRUE_LABELS, probabilities)) <= 1


def test_indices_map_rows_back_to_embedding_positions():
    labels, probabilities = three_confident_errors()
    offset = np.arange(len(TRUE_LABELS)) + 1000
    issues = find_label_issues(labels, probabilities, indices=offset)
    assert {issue.index for issue in issues[:3]} == {row + 1000 for row in MISLABELLED}


def test_table_has_path_given_suggested_score_with_class_names_in_rank_order():
    issues = (
        LabelIssue(index=2, given=0, suggested=1, score=0.05, probability_given=0.05,
                   probability_suggested=0.9),
        LabelIssue(index=0, given=1, suggested=0, score=0.2, probability_given=0.2,
                   probability_suggested=0.7),
    )  # fmt: skip
    table = label_issues_table(issues, ["a/x.png", "b/y.png", "a/z.png"], ["cats", "dogs"])
    assert list(table.columns) == ["path", "given", "suggested", "score"]
    assert table.to_dict("records") == [
        {"path": "a/z.png", "given": "cats", "suggested": "dogs", "score": 0.05},
        {"path": "a/x.png", "given": "dogs", "suggested": "cats", "score": 0.2},
    ]
    assert list(label_issues_table((), [], []).columns) == ["path", "given", "suggested", "score"]


def test_tiny_and_degenerate_inputs_do_not_crash_and_stay_silent(recwarn, capsys):
    two_by_two = np.array([0, 0, 1, 1])
    class_one_never_predicted = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    for issue in find_label_issues(two_by_two, class_one_never_predicted):
        assert issue.given == 1 and issue.suggested == 0

    one_example_per_class = find_label_issues(
        np.array([0, 1, 2]), np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    )
    assert all(issue.index in (0, 1) for issue in one_example_per_class)

    single = find_label_issues(np.array([0]), np.array([[1.0]]))
    assert single == ()
    assert find_label_issues(np.array([], dtype=int), np.empty((0, 3))) == ()

    assert not recwarn.list
    assert capsys.readouterr().out == ""


def test_when_cleanlab_cannot_run_disagreeing_predictions_are_flagged_lowest_score_first():
    # cleanlab refuses labels that contain a single class.
    labels = np.array([0, 0, 0, 0])
    probabilities = np.array([[0.3, 0.7], [0.9, 0.1], [0.05, 0.95], [0.6, 0.4]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        issues = find_label_issues(labels, probabilities)
    assert [issue.index for issue in issues] == [2, 0]
    assert [issue.suggested for issue in issues] == [1, 1]
    assert [issue.score for issue in issues] == pytest.approx([0.05, 0.3])


@pytest.mark.parametrize(
    ("labels", "probabilities", "indices", "message"),
    [
        (np.zeros((2, 2), dtype=int), np.full((2, 2), 0.5), None, "one-dimensional"),
        (np.array([0, 1]), np.full((3, 2), 0.5), None, "shape"),
        (np.array([0, 1]), np.full(2, 0.5), None, "shape"),
        (np.array([0, 2]), np.full((2, 2), 0.5), None, "labels must lie"),
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5), None, "integer"),
        (np.array([0, 1]), np.array([[0.5, 0.6], [0.5, 0.5]]), None, "sum to 1"),
        (np.array([0, 1]), np.array([[np.nan, 1], [0.5, 0.5]]), None, "finite"),
        (np.array([0, 1]), np.full((2, 2), 0.5), np.array([0, 1, 2]), "indices"),
    ],
)
def test_malformed_inputs_are_refused_with_a_clear_message(labels, probabilities, indices, message):
    with pytest.raises(ValueError, match=message):
        find_label_issues(labels, probabilities, indices=indices)


@pytest.mark.slow
def test_images_moved_into_a_wrong_class_folder_are_among_the_first_flagged(encoder, tmp_path):
    """Five flags (a class the bundled encoder knows well) moved into five other classes.

    Scored by the studio's own protocol (nested cross-validation, every image out of fold).
    The demo probe is far from perfect (about 67% accurate), so genuine confusions compete
    with the moved images; by chance about 0.35 of them would land in the top ten.
    """
    root = tmp_path / "demo"
    shutil.copytree(DEMO_DIR, root)
    others = sorted(f.name for f in root.iterdir() if f.is_dir() and f.name != "flags")
    moved: dict[str, str] = {}  # new path -> true class
    for source, target in zip(sorted((root / "flags").iterdir())[:5], others, strict=True):
        source.rename(root / target / source.name)
        moved[f"{target}/{source.name}"] = "flags"

    embeddings = extract_embeddings(scan_folder(root), encoder)
    result = run_probe(embeddings, protocol="cv", seed=0)
    table = label_issues_table(result.label_issues, embeddings.paths, result.class_names)

    top_ten = set(table["path"].head(10))
    assert sum(path in top_ten for path in moved) >= 3
    assert sum(path in set(table["path"]) for path in moved) >= 4
    for path in moved:
        if path in top_ten:
            row = table[table["path"] == path].iloc[0]
            assert row["given"] == Path(path).parent.name
            assert row["suggested"] == "flags"
