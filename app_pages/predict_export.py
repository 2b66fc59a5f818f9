"""Predict new images with the fitted probe; download embeddings, predictions, probe, report."""

from __future__ import annotations

import hashlib

import streamlit as st

from probe_core.encoders import EncoderError
from probe_core.export import (
    ProbeFileError,
    embeddings_parquet,
    predictions_table,
    probe_to_json,
    probe_to_safetensors,
    read_probe_file,
)
from probe_core.figures import prediction_figure
from probe_core.onnx_export import OnnxExportError, check_exportable, export_zip
from probe_core.predict import ProbeMismatchError, predict_images
from probe_core.probe import ProbeWeights
from probe_core.report import html_report
from studio import shared, why


def probe_to_use(current: shared.Session | None) -> ProbeWeights | None:
    """The probe fitted in this session, or one loaded from a saved file."""
    saved = st.file_uploader(
        "Use a saved probe instead (optional: a .safetensors or .json file exported here)",
        type=["safetensors", "json"],
        key="saved_probe",
    )
    if saved is not None:
        try:
            weights = read_probe_file(saved.getvalue())
        except ProbeFileError as error:
            st.error(f"{saved.name}: {error}")
            return None
        st.caption(
            f"Saved probe: {len(weights.class_names)} classes, encoder `{weights.encoder_id}`."
        )
        return weights
    if current is None or current.result is None:
        return None  # the page explains below how to get results
    return shared.session_probe(current)


def predict(current: shared.Session | None) -> None:
    st.subheader("Predict new images")
    uploads = st.file_uploader(
        "Drop new images", type=shared.IMAGE_TYPES, accept_multiple_files=True, key="predict_images"
    )
    weights = probe_to_use(current)
    if weights is None or not uploads:
        return
    if not weights.encoder_name:
        st.info(
            f"This probe was fitted on precomputed embeddings (encoder `{weights.encoder_id}`):"
            " new images would need that encoder, which the studio cannot load from its id."
            " Embed them with the same tool, or open the image folder to probe it here."
        )
        return
    try:
        encoder = shared.encoder_for_session(weights.encoder_name)
        predictions, skipped = predict_images(
            [(upload.name, upload.getvalue()) for upload in uploads], encoder, weights
        )
    except (EncoderError, ProbeMismatchError) as error:
        st.error(str(error))
        return
    for item in skipped:
        st.warning(f"{item.path}: {item.reason}")
    for prediction, upload in zip(
        predictions, [u for u in uploads if u.name in {p.name for p in predictions}], strict=False
    ):
        image_col, chart_col = st.columns([1, 3])
        image_col.image(upload.getvalue(), width=140)
        image_col.caption(f"{prediction.name}: **{prediction.predicted}**")
        chart_col.plotly_chart(
            prediction_figure(prediction.class_names, prediction.probabilities),
            width="stretch",
            key=f"prediction_{prediction.name}",
        )
        if why.explains(current, weights):
            with image_col:
                why.why_button("predict", prediction.name)
            if why.chosen("predict") == prediction.name:
                why.why_panel(current, "predict", {prediction.name: upload.getvalue()})


def downloads(current: shared.Session) -> None:
    st.subheader("Downloads")
    embeddings, result = current.embeddings, current.result
    weights = shared.session_probe(current)
    stem = current.file_stem()
    columns = st.columns(3)
    columns[0].download_button(
        "Embeddings (Parquet)",
        embeddings_parquet(embeddings),
        file_name=f"{stem}_embeddings.parquet",
        mime="application/octet-stream",
    )
    columns[1].download_button(
        "Predictions (CSV)",
        predictions_table(embeddings, result).to_csv(index=False),
        file_name=f"{stem}_predictions.csv",
        mime="text/csv",
    )
    columns[2].download_button(
        "Probe (safetensors)",
        probe_to_safetensors(weights),
        file_name=f"{stem}_probe.safetensors",
        mime="application/octet-stream",
    )
    columns = st.columns(3)
    columns[0].download_button(
        "Probe (JSON)",
        probe_to_json(weights),
        file_name=f"{stem}_probe.json",
        mime="application/json",
    )
    projection = next(iter(current.projections.values()), None)
    if projection is None:
        projection = shared.projection_for(current, "pca", 2, 15, 0.1)
    columns[1].download_button(
        "Report (standalone HTML)",
        html_report(embeddings, result, projection, title=f"Probe report: {current.label}"),
        file_name=f"{stem}_report.html",
        mime="text/html",
    )
    st.caption(
        "The probe is fitted on every image at the chosen C and holds coefficients,"
        " intercepts, class names, the encoder id and execution path, and the metrics with"
        " their intervals; it is never a pickle (`probe-studio predict` takes either file)."
    )
    onnx_download(current, weights, stem)


def onnx_download(current: shared.Session, weights: ProbeWeights, stem: str) -> None:
    """The same three files as ``probe-studio export RUN_DIR --format onnx``, as one zip:
    built on request (it takes a while), checked against predict, kept for the session."""
    st.markdown("**Classifier for onnxruntime (ONNX)**")
    try:
        encoder = None
        if weights.encoder_name and not weights.encoder_name.startswith("baseline:"):
            encoder = shared.encoder_for_session(weights.encoder_name)
        check_exportable(weights, encoder)
    except (OnnxExportError, EncoderError, ProbeMismatchError) as error:
        st.info(f"ONNX export is not available for this probe: {error}")
        return
    built = st.session_state.setdefault("onnx_exports", {})
    key = (stem, weights.encoder_id, probe_digest(weights))
    slot = st.empty()  # the button, gone once the classifier is built
    if key not in built and slot.button(
        "Build the ONNX classifier",
        help="classifier.onnx (the encoder, its preprocessing and the probe in one graph),"
        " classifier.json (the model card) and README.md, as `probe-studio export RUN_DIR"
        " --format onnx` writes them; checked on up to 128 of your images first",
    ):
        with st.status("Building the ONNX classifier…", expanded=True) as status:
            try:
                built[key] = export_zip(
                    weights,
                    current.dataset.items,
                    dict(zip(current.embeddings.paths, current.embeddings.vectors, strict=True)),
                    log=status.write,
                )
            except OnnxExportError as error:
                status.update(label="The ONNX classifier was not built", state="error")
                st.error(str(error))
                return
            status.update(label="The ONNX classifier is ready", state="complete", expanded=False)
        slot.empty()
    if key not in built:
        st.caption(
            "One file with the encoder, its preprocessing and the probe, for onnxruntime in"
            " Python, C, C#, Java or a browser (onnxruntime-web), without this studio; building"
            " it takes a minute or more."
        )
        return
    exported = built[key]
    check = exported.check.sentence()
    st.download_button(
        "Classifier (ONNX, zip)",
        exported.data,
        file_name=f"{stem}_onnx.zip",
        mime="application/zip",
    )
    st.caption(
        f"Holds classifier.onnx, classifier.json and README.md (with a 10-line onnxruntime and"
        f" Pillow example). {check[0].upper()}{check[1:]}."
    )


def probe_digest(weights: ProbeWeights) -> str:
    """Which probe an export belongs to: its coefficients, intercepts and classes."""
    digest = hashlib.sha256(weights.coef.tobytes() + weights.intercept.tobytes())
    digest.update("\n".join(weights.class_names).encode())
    return digest.hexdigest()[:16]


st.title("Predict and export")
predict(shared.session())
st.divider()
current = shared.require_results()
if current is not None:
    downloads(current)
