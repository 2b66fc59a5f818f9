"""The explainer explains the probe that made the decision: for a scored image, the probe of
its fold, refitted and checked against the run's own record."""

from __future__ import annotations

import numpy as np
import pytest

from probe_core.evaluation.protocols import run_probe
from probe_core.explain import explainer as explainer_module
from probe_core.explain.explainer import Explainer
from tests.test_probe import clustered_embeddings


@pytest.mark.parametrize("protocol", ["cv", "holdout"])
def test_the_scoring_probe_is_refitted_exactly_as_the_run_scored(protocol):
    embeddings = clustered_embeddings([14, 14, 14], spread=1.1)
    result = run_probe(embeddings, protocol=protocol, folds=3, seed=0)
    explainer = Explainer.from_result(embeddings, result)
    for position in (0, len(result.evaluated) - 1):
        row = int(result.evaluated[position])
        weights, fold = explainer.scoring_weights(row)
        assert fold == result.folds[position]
        refitted = weights.predict_proba(embeddings.vectors[row][None, :])[0]
        np.testing.assert_allclose(refitted, result.probabilities[position], atol=1e-4)


def test_a_mistake_is_explained_with_the_probe_that_made_it():
    embeddings = clustered_embeddings([14, 14, 14], spread=1.4)
    result = run_probe(embeddings, protocol="cv", folds=3, seed=0)
    explainer = Explainer.from_result(embeddings, result)
    wrong = np.flatnonzero(result.predictions != result.labels)
    assert len(wrong)
    position = int(wrong[0])
    row = int(result.evaluated[position])
    explanation = explainer.explain_row(row)
    scored = result.class_names[result.predictions[position]]
    assert explanation.is_mistake and explanation.scored_prediction == scored
    assert explanation.predicted == scored and explanation.explained_class == scored
    assert explanation.probe_fold == result.folds[position]
    assert "never saw this image" in explanation.probe_sentence()
    np.testing.assert_allclose(explanation.probabilities, result.probabilities[position], atol=1e-4)
    # No encoder: neighbours and the rest still come, the saliency says why it is missing.
    assert explanation.saliency is None and "no encoder" in explanation.no_saliency_reason
    assert len(explanation.neighbours) == 8
    shipped = explainer.explain_row(row, probe="shipped")
    assert shipped.probe_fold is None and shipped.predicted == shipped.shipped_prediction
    np.testing.assert_allclose(
        shipped.probabilities,
        explainer.weights.predict_proba(embeddings.vectors[row][None, :])[0],
    )


def test_a_refit_that_does_not_reproduce_the_run_falls_back_to_the_shipped_probe():
    embeddings = clustered_embeddings([10, 10], spread=1.0)
    result = run_probe(embeddings, protocol="cv", folds=2, seed=0)
    explainer = Explainer.from_result(embeddings, result)
    explainer.scores.fold_c["1"] *= 1e4  # a C the run did not use: another probe
    row = int(result.evaluated[list(result.folds).index("1")])
    assert explainer.scoring_weights(row) is None
    explanation = explainer.explain_row(row)
    assert explanation.probe_fold is None and "shipped probe" in explanation.probe_sentence()


def test_explanations_are_kept_so_a_second_why_costs_nothing(monkeypatch):
    embeddings = clustered_embeddings([10, 10], spread=1.0)
    result = run_probe(embeddings, protocol="cv", folds=2, seed=0)
    explainer = Explainer.from_result(embeddings, result)
    first = explainer.explain_row(3)
    assert explainer.explain_row(3) is first  # the same answer, not computed again
    other = explainer.explain_row(3, probe="shipped")
    assert other is not first and other.probe_fold is None  # another question, another answer
    monkeypatch.setattr(explainer_module, "KEPT_EXPLANATIONS", 2)
    explainer.explain_row(4)
    explainer.explain_row(5)  # three kept at most two: the least recently used goes
    assert explainer.explain_row(3) is not first
