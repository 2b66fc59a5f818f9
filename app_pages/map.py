"""Map: UMAP or PCA of the normalised embeddings, how far to trust it, hover thumbnails and
box/lasso selection."""

from __future__ import annotations

import streamlit as st

from probe_core.embeddings import Embeddings
from probe_core.evaluation.map_quality import DEFAULT_NEIGHBOURS
from probe_core.figures import COLOR_BY, add_disagreement_layer, embedding_figure, map_frame
from probe_core.projection import MapScore, Projection, score_map
from probe_core.wording import caption_text, plural
from studio import shared
from studio.components import hover_thumbnails
from studio.why import chosen as why_chosen
from studio.why import why_button, why_panel


def map_score(projection: Projection, embeddings: Embeddings) -> MapScore | None:
    """The projection's own score (``Study.project`` adds it), else computed here."""
    if projection.score is not None:
        return projection.score
    k = projection.params.get("n_neighbors", DEFAULT_NEIGHBOURS)
    return score_map(embeddings.vectors, projection.coords, embeddings.labels, k=k)


def show_map_quality(score: MapScore | None, projection: Projection) -> bool:
    """The map's trustworthiness and k-NN label agreement, in a row of their own (so that no
    label is cut short); True when disagreeing points should be highlighted."""
    st.markdown("**How far to trust this map**")
    if score is None:
        st.caption("Too few points to judge the map.")
        return False
    quality = score.quality
    trust, full, on_map = st.columns(3)
    trust.metric(
        f"Trustworthiness (k = {quality.k})",
        f"{quality.trustworthiness:.2f}",
        help="1.0 when every point's k nearest neighbours on the map are also among its"
        " nearest neighbours in the full embedding (cosine); scikit-learn's trustworthiness.",
    )
    full.metric(
        "k-NN label agreement, full embedding",
        f"{quality.knn_agreement_full:.0%}",
        help=f"Share of points whose {quality.k} nearest neighbours in the full embedding"
        " mostly carry the point's own label.",
    )
    on_map.metric(
        f"k-NN label agreement, {quality.n_components}-D map",
        f"{quality.knn_agreement_map:.0%}",
        help="The same on the map: a lower number means the map mixes classes that the"
        " full embedding keeps apart.",
    )
    reading = score.reading()
    notes = [reading[:1].upper() + reading[1:] + "."]
    if projection.neighbour_search == "exact":
        notes.append("UMAP ran on exact cosine neighbours.")
    elif projection.neighbour_search == "approximate":
        notes.append("UMAP ran on approximate neighbours (pynndescent).")
    if "pca_dimensions" in projection.params:
        notes.append(f"UMAP ran on a {projection.params['pca_dimensions']}-D PCA of the vectors.")
    st.caption(" ".join(notes))
    return st.toggle(
        f"Highlight the {plural(len(score.disagreeing), 'point')} whose map neighbourhood"
        " disagrees",
        key="map_highlight",
        help="Ringed points: the majority label of their neighbours on the map differs from"
        " that of their neighbours in the full embedding.",
    )


current = shared.require_results()
if current is not None:
    st.title("Map of the embeddings")
    defaults = shared.MapSettings()
    method_col, dims_col, color_col, neighbours_col, dist_col = st.columns(5)
    methods, dimensions = ["umap", "pca"], [2, 3]
    method = method_col.radio(
        "Method",
        methods,
        index=methods.index(defaults.method),
        format_func=str.upper,
        key="map_method",
    )
    dims = dims_col.radio(
        "Dimensions",
        dimensions,
        index=dimensions.index(defaults.dims),
        key="map_dims",
        format_func=lambda d: f"{d}-D",
    )
    color_by = color_col.selectbox(
        "Colour by",
        COLOR_BY,
        key="map_color",
        format_func={
            "true": "true class",
            "predicted": "predicted class",
            "correct": "correct / wrong",
        }.get,
    )
    n_neighbors = neighbours_col.slider(
        "UMAP neighbours",
        2,
        100,
        defaults.n_neighbors,
        key="map_neighbours",
        disabled=method != "umap",
    )
    min_dist = dist_col.slider(
        "UMAP min. distance",
        0.0,
        0.99,
        defaults.min_dist,
        key="map_min_dist",
        disabled=method != "umap",
    )
    projection = shared.projection_for(current, method, dims, n_neighbors, min_dist)
    score = map_score(projection, current.embeddings)
    highlight = show_map_quality(score, projection)
    figure = embedding_figure(projection, current.embeddings, current.result, color_by=color_by)
    if highlight and score is not None:
        add_disagreement_layer(figure, projection, current.embeddings, score.disagreeing)
    figure.update_layout(height=620, dragmode="lasso" if dims == 2 else None)
    event = st.plotly_chart(
        figure,
        key="map",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        width="stretch",
    )
    # A 3-D view has no box or lasso (and Plotly reports no clicks on it): dragging turns it.
    select = (
        "drag a box or lasso to select images."
        if dims == 2
        else "drag to turn the view, scroll to zoom. To select images, switch to 2-D."
    )
    if current.images.reason:
        st.caption(f"No thumbnails: {current.images.reason}. {select[:1].upper()}{select[1:]}")
    else:
        hover_thumbnails("map", lambda index: shared.thumbnails_for(current, [index]).get(index))
        st.caption(f"Hover a point for its thumbnail; {select}")

    selected = sorted({int(p["customdata"][1]) for p in (event.selection.points if event else [])})
    if selected:
        frame = map_frame(projection, current.embeddings, current.result).iloc[selected]
        st.subheader(f"{plural(len(selected), 'selected image')}")
        st.download_button(
            "Download selection as CSV",
            frame[["path", "true", "predicted", "split"]].to_csv(index=False),
            file_name=f"{current.file_stem()}_selection.csv",
            mime="text/csv",
        )
        thumbs = shared.thumbnails_for(current, selected[:60])
        grid = st.columns(8)
        for position, index in enumerate(selected[:60]):
            with grid[position % 8]:
                if index in thumbs:
                    st.image(thumbs[index], width=80)
                path = current.embeddings.paths[index]
                st.caption(caption_text(path, breakable=True), unsafe_allow_html=True)
                why_button("map", index)
        if len(selected) > 60:
            st.caption(f"… and {len(selected) - 60} more in the CSV.")
        if why_chosen("map") in selected:
            why_panel(current, "map")
