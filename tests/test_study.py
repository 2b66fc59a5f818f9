"""Study's state: comparing encoders leaves the study's own encoder in place, and cache hits
are reported as a flag, not as a message to match."""

from __future__ import annotations

from probe_core.result_cache import ResultCache
from probe_core.study import Study, StudyProgress, StudySettings

PIXELS, HISTOGRAM = "baseline:pixels", "baseline:color-histogram"


def test_compare_leaves_the_study_encoder_the_one_its_settings_name(image_folder):
    study = Study(StudySettings(encoder=PIXELS, projection="none", duplicate_threshold=None))
    study.compare(image_folder, [PIXELS, HISTOGRAM])
    assert study.encoder.name == PIXELS  # not the last encoder compared
    assert study.embed(study.scan(image_folder)).encoder_id == study.encoder.encoder_id

    other = Study(StudySettings(encoder=HISTOGRAM, projection="none", duplicate_threshold=None))
    other.compare(image_folder, [PIXELS, HISTOGRAM])
    assert other.encoder.name == HISTOGRAM


def test_a_cache_hit_is_a_flag_on_the_progress_event(image_folder, tmp_path):
    events: list[StudyProgress] = []
    settings = StudySettings(
        encoder=PIXELS, protocol="holdout", projection="pca", fixed_c=1.0, duplicate_threshold=None
    )
    study = Study(settings, result_cache=ResultCache(tmp_path), progress=events.append)
    embeddings = study.embed(study.scan(image_folder))
    for _ in range(2):
        study.evaluate(embeddings)
        study.project(embeddings)
    stages = [
        (e.stage, e.message, e.from_cache) for e in events if e.stage in ("evaluate", "project")
    ]
    assert stages == [
        ("evaluate", "holdout", False),
        ("project", "pca", False),
        ("evaluate", "holdout", True),
        ("project", "pca", True),
    ]
