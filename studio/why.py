"""The "Why?" of one image, shared by the Results, Map and Predict pages.

A page puts ``why_button(place, target)`` under an image (``target``: the image's row in the
study's embeddings, or an uploaded file's name) and ``why_panel(current, place)`` where the
explanation should open. Clicking "Why?" remembers the image for this session; the panel then
shows, computed on demand (a spinner meanwhile) and kept by the library's ``Explainer``:

- the saliency overlay over the original image (the crop the encoder saw outlined, the method
  named) and its deletion check in one sentence, or why there is no saliency;
- the image's nearest images (label, cosine, same fold or not);
- for its class (and the class it was taken for, on a mistake): the most and least typical
  images (the measure named) and where the probe looks for it, with the possible-shortcut
  flag where it applies.

All computing is in ``probe_core.explain``; this module only lays it out.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from probe_core.encoders import EncoderError
from probe_core.explain.deletion import DeletionCheck
from probe_core.explain.explainer import Explainer, ExplainError, ImageExplanation
from probe_core.explain.overlay import crop_heat_map, explanation_overlay
from probe_core.explain.saliency import SaliencyModel, SaliencyUnavailable
from probe_core.explain.shortcuts import BORDER_BAND, MIN_IMAGES, SHORTCUT_SHARE, border_area
from probe_core.explain.typicality import Typicality
from probe_core.probe import ProbeWeights
from probe_core.wording import caption_text, file_name_caption, plural
from studio import shared

CHOSEN = "why_chosen"  # session state: {"place": ..., "target": row or upload name}
EXPLAINER = "why_explainer"  # session state: (the result explained, its Explainer)
OVERLAY_WIDTH = 420
THUMB_WIDTH = 80
PER_ROW = 8
TYPICAL_SHOWN = 6


def why_button(place: str, target: int | str, *, key: str | None = None) -> None:
    """The "Why?" button of one image (its row, or an uploaded file's name) on ``place``."""
    st.button(
        "Why?",
        key=key or f"why_{place}_{target}",
        help="Where the probe's evidence lies in this image, checked against random; the"
        " images nearest to it; its class's typical and atypical images.",
        on_click=_choose,
        args=(place, target),
    )


def _choose(place: str, target: int | str) -> None:
    st.session_state[CHOSEN] = {"place": place, "target": target}
    st.session_state.pop(f"why_class_{place}", None)  # a new image starts with its prediction


def _close() -> None:
    st.session_state.pop(CHOSEN, None)


def chosen(place: str) -> int | str | None:
    """The image whose "Why?" was clicked on ``place``, if any."""
    choice = st.session_state.get(CHOSEN)
    return choice["target"] if choice and choice["place"] == place else None


# ----------------------------------------------------------------------- the library's side


@st.cache_resource(show_spinner=False)
def saliency_model(encoder_name: str) -> SaliencyModel:
    """One fp32 copy of an encoder's model for gradients, shared by every session."""
    return SaliencyModel.from_encoder(shared.shared_encoder(encoder_name))


def explainer_for(current: shared.Session) -> Explainer:
    """This study's explainer (made once per result, kept in the session): the shipped probe,
    the run's out-of-sample scores, the encoder when the study has one."""
    kept = st.session_state.get(EXPLAINER)
    if kept is not None and kept[0] is current.result:
        return kept[1]
    encoder = model = None
    if not current.precomputed:
        try:
            encoder = shared.encoder_for_session(current.settings.encoder)
            model = saliency_model(current.settings.encoder)
        except EncoderError:
            encoder = model = None
    probe = shared.study_runner(current, encoder).final_probe(current.embeddings, current.result)
    weights = ProbeWeights.from_estimator(
        probe,
        current.result.class_names,
        current.embeddings.encoder_id,
        encoder_name="" if current.precomputed else current.settings.encoder,
    )
    explainer = Explainer.from_result(
        current.embeddings,
        current.result,
        encoder,
        read_image=current.images.read,
        saliency_model=model,
        weights=weights,
    )
    st.session_state[EXPLAINER] = (current.result, explainer)
    return explainer


def explains(current: shared.Session | None, weights: ProbeWeights) -> bool:
    """Whether "Why?" can explain predictions of ``weights``: the probe this study ships."""
    if current is None or current.result is None:
        return False
    shipped = explainer_for(current).weights
    return (
        list(shipped.class_names) == list(weights.class_names)
        and np.array_equal(shipped.coef, weights.coef)
        and np.array_equal(shipped.intercept, weights.intercept)
    )


# ------------------------------------------------------------------------------ the panel


def why_panel(current: shared.Session, place: str, uploads: dict[str, bytes] | None = None) -> None:
    """The explanation of the image chosen on ``place`` (``uploads``: file bytes by name, for
    images that are not the study's), when one was chosen there."""
    target = chosen(place)
    if target is None:
        return
    explainer = explainer_for(current)
    with st.container(border=True, key=f"why_panel_{place}"):
        heading, close = st.columns([6, 1])
        name = target if isinstance(target, str) else current.embeddings.paths[target]
        heading.subheader(f"Why? {name.replace(chr(92), '/').rsplit('/', 1)[-1]}")
        close.button("Close", key=f"why_close_{place}", on_click=_close)
        classes = list(explainer.weights.class_names)
        choice = st.selectbox(
            "Explain the evidence for",
            ["the predicted class", *classes],
            key=f"why_class_{place}",
            help="Saliency shows where the evidence for one class comes from; by default the"
            " class the probe predicts.",
        )
        class_name = None if choice == "the predicted class" else choice
        data = None
        if isinstance(target, str):
            data = (uploads or {}).get(target)
            if data is None:
                st.info(f"{name} is no longer uploaded.")
                return
        with st.spinner(
            "Explaining: saliency through the encoder, and its deletion check (some thirty"
            " passes of the encoder; seconds on a CPU)…"
        ):
            try:
                if data is None:
                    explanation = explainer.explain_row(int(target), class_name)
                else:
                    explanation = explainer.explain_image(data, name, class_name, probe="shipped")
            except ExplainError as error:
                st.error(str(error))
                return
        image_bytes = data if data is not None else current.images.read(name)
        show_decision(explanation)
        show_saliency(explanation, image_bytes, no_encoder=current.precomputed)
        show_neighbours(current, explanation)
        show_classes(current, explainer, explanation)


def show_decision(explanation: ImageExplanation) -> None:
    """What the probe decided, which probe it was, and what was asked of it."""
    parts = []
    if explanation.label is not None:
        parts.append(f"labelled **{caption_text(explanation.label)}**")
    if explanation.scored_prediction is not None:
        verdict = "a mistake" if explanation.is_mistake else "right"
        parts.append(
            f"scored out of sample as **{caption_text(explanation.scored_prediction)}** ({verdict})"
        )
    elif explanation.row is None:
        parts.append(f"predicted **{caption_text(explanation.predicted)}**")
    else:
        parts.append("not scored by the run (a training image)")
    st.markdown(" · ".join(parts)[:1].upper() + " · ".join(parts)[1:])
    st.caption(
        f"Explained: P({caption_text(explanation.explained_class)}) ="
        f" {explanation.explained_probability:.2f} for {explanation.probe_sentence()}."
    )


def show_saliency(explanation: ImageExplanation, image: bytes | None, *, no_encoder: bool) -> None:
    if explanation.saliency is None:
        reason = explanation.no_saliency_reason or "no saliency"
        if no_encoder:
            reason = (
                "these embeddings were opened from a file, and the studio cannot load their"
                " encoder, so there is no saliency"
            )
        st.info(f"No saliency map: {reason}.")
        return
    picture, words = st.columns([3, 2])
    if image is not None:
        picture.image(
            explanation_overlay(explanation, image, captioned=False),
            width=OVERLAY_WIDTH,
            caption="Evidence for"
            f" {explanation.explained_class}: brighter is stronger. The white outline is the"
            " crop the encoder saw; outside it is dimmed.",
        )
    method = explanation.saliency.method.name
    words.markdown(f"**Method:** {method[:1].upper() + method[1:]}.")
    if explanation.saliency.no_positive_evidence:
        words.warning(
            f"Nothing in the crop speaks for {caption_text(explanation.explained_class)}:"
            " the map is flat."
        )
    if explanation.deletion is not None:
        show_deletion(words, explanation.deletion)


def show_deletion(where, check: DeletionCheck) -> None:
    """The deletion check's sentence (plain when the map is no better than random) and its
    steps in a small table."""
    sentence = _named(check.sentence(), check.class_name)
    if check.better_than_random:
        where.success(sentence, icon=":material/check_circle:")
    else:
        where.warning(sentence, icon=":material/help:")
    where.caption(
        "Deletion check: the highlighted pixels of the crop, and as many random pixels"
        f" ({check.draws} seeded draws in patches of the map's size), are blurred and the"
        f" probability measured again (P = {check.probability:.2f} before). Drop (random): the"
        " mean of the draws; beats random: the map's drop is larger than every draw's."
    )
    where.dataframe(
        [
            {
                "hidden": f"{step.fraction:.0%}",
                "drop (map)": step.salient_drop,
                "drop (random)": step.random_drop,
                "beats random": step.beats_random,
            }
            for step in check.steps
        ],
        hide_index=True,
        column_config={
            "drop (map)": st.column_config.NumberColumn(format="%.2f"),
            "drop (random)": st.column_config.NumberColumn(format="%.2f"),
        },
    )


def show_neighbours(current: shared.Session, explanation: ImageExplanation) -> None:
    nearest = explanation.neighbours
    st.markdown(f"**Nearest images** ({len(nearest)}, by cosine in the full embedding)")
    search = "exact search" if nearest.exact else "approximate index, cosines exact"
    fold_note = (
        " Same fold: held out together with it, so the probe that scored it never saw that"
        " image either."
        if any(n.same_fold is not None for n in nearest.neighbours)
        else ""
    )
    st.caption(f"It looks like these ({search}).{fold_note}")
    thumbs = shared.thumbnails_for(current, [n.index for n in nearest.neighbours])
    columns = st.columns(PER_ROW)
    for position, neighbour in enumerate(nearest.neighbours):
        with columns[position % PER_ROW]:
            if neighbour.index in thumbs:
                st.image(thumbs[neighbour.index], width=THUMB_WIDTH)
            fold = {True: "same fold", False: "other fold", None: ""}[neighbour.same_fold]
            st.caption(
                f"{file_name_caption(neighbour.path)}  \n"
                f"{caption_text(neighbour.label, breakable=True)}"
                f" · cos {neighbour.cosine:.2f}" + (f"  \n{fold}" if fold else ""),
                unsafe_allow_html=True,  # names escaped by caption_text
            )


def show_classes(
    current: shared.Session, explainer: Explainer, explanation: ImageExplanation
) -> None:
    """Typical and atypical images, and where the probe looks, for the explained class and,
    when it differs, the image's own."""
    names = [explanation.explained_class]
    if explanation.label and explanation.label not in names:
        names.append(explanation.label)
    typicality = explainer.typicality()
    for tab, name in zip(st.tabs([f"Class {n}" for n in names]), names, strict=True):
        with tab:
            if name in typicality:
                show_typicality(current, typicality[name])
            show_shortcut(explainer, name)


def show_typicality(current: shared.Session, found: Typicality) -> None:
    st.caption(f"Ranked {found.describe()}; {found.n_images} images of the class.")
    for title, images in (("Most typical", found.typical), ("Least typical", found.atypical)):
        st.markdown(f"**{title}**")
        shown = images[:TYPICAL_SHOWN]
        thumbs = shared.thumbnails_for(current, [image.index for image in shown])
        columns = st.columns(PER_ROW)
        for position, image in enumerate(shown):
            with columns[position % PER_ROW]:
                if image.index in thumbs:
                    st.image(thumbs[image.index], width=THUMB_WIDTH)
                score = (
                    f"margin {image.score:+.2f}"
                    if found.measure == "margin"
                    else f"cos {image.score:.2f}"
                )
                taken = (
                    f"  \ntaken for {caption_text(image.predicted, breakable=True)}"
                    if image.predicted and image.predicted != found.class_name
                    else ""
                )
                st.caption(
                    f"{file_name_caption(image.path)}  \n{score}{taken}", unsafe_allow_html=True
                )


def show_shortcut(explainer: Explainer, class_name: str) -> None:
    """Where the probe looks for the class, and the possible-shortcut flag."""
    if explainer.no_saliency_reason is not None or class_name not in explainer.weights.class_names:
        return
    with st.spinner(f"Averaging the saliency of {class_name}'s correctly predicted images…"):
        try:
            mean = explainer.class_saliency(class_name)
        except (ExplainError, SaliencyUnavailable) as error:
            st.caption(str(error))
            return
    if mean.n_images == 0:
        st.caption(f"No correctly predicted image of {caption_text(class_name)} to average.")
        return
    heat, words = st.columns([1, 3])
    heat.image(crop_heat_map(mean.mean, side=160), width=160)
    name = caption_text(class_name)
    if mean.possible_shortcut:
        words.warning(_named(mean.sentence(), class_name), icon=":material/warning:")
    elif mean.n_images < MIN_IMAGES:
        words.markdown(_named(mean.sentence(), class_name))
    else:
        words.markdown(
            f"**Where the probe looks for {name}:** {mean.border_share:.0%} of its saliency"
            " lies on the outer border of the crop; no shortcut flagged."
        )
    words.caption(
        f"Mean saliency of {plural(mean.n_images, 'correctly predicted image')}, on the crop"
        f" (brighter: more of the probe's evidence). A possible shortcut is flagged when at"
        f" least {SHORTCUT_SHARE:.0%} of it lies on the outer {BORDER_BAND:.1%} of each side"
        f" ({border_area():.0%} of the crop's area): a frame, a watermark or a margin rather"
        " than the subject."
    )


def _named(sentence: str, class_name: str) -> str:
    """A library sentence as a Markdown sentence: capitalised, a full stop, the class name
    escaped (``caption_text``) wherever it appears."""
    sentence = sentence.replace(class_name, caption_text(class_name))
    return sentence[:1].upper() + sentence[1:] + "."
