"""How counts and scores read: one helper for plurals, one formatting of accuracy."""

from __future__ import annotations

from probe_core.evaluation.intervals import Estimate
from probe_core.wording import (
    caption_text,
    file_name_caption,
    interval,
    percent,
    percent_with_interval,
    plural,
)


def test_one_of_a_thing_is_singular_and_everything_else_plural():
    assert plural(1, "file") == "1 file"
    assert plural(0, "file") == "0 files"
    assert plural(2, "image") == "2 images"
    assert plural(12_345, "image") == "12,345 images"
    assert plural(1, "class") == "1 class"
    assert plural(3, "class") == "3 classes"
    assert plural(2, "entry", "entries") == "2 entries"


def test_accuracy_reads_as_a_percentage_with_its_interval():
    estimate = Estimate(value=1.0, low=0.6637, high=1.0, method="clopper-pearson")
    assert percent(estimate.value) == "100.0%"
    assert interval(estimate) == "95% CI 66.4% to 100.0%"
    assert percent_with_interval(estimate) == "100.0% (95% CI 66.4% to 100.0%)"


def test_names_in_captions_show_as_typed_and_break_between_their_parts():
    assert caption_text("objects") == "objects"
    assert caption_text("looks like b (p(b) = 0.93)") == "looks like b (p(b) = 0.93)"
    assert caption_text("*bold* [x](y) <b>&") == (
        "&#42;bold&#42; &#91;x&#93;(y) &#60;b&#62;&#38;"
    )  # no emphasis, link or HTML
    assert caption_text("$5 and $10") == "&#36;5 and &#36;10"  # no LaTeX
    assert caption_text("1. intro.png") == "&#49;. intro.png"  # no numbered list
    assert caption_text("- x") == "&#45; x"
    assert file_name_caption("data/cats/big_cat-photo.png") == (
        "big&#95;<wbr>cat-<wbr>photo.<wbr>png"
    )
