"""Map: UMAP or PCA of the normalised embeddings; hover thumbnails; box/lasso selection."""

from __future__ import annotations

import streamlit as st

from pages import shared
from pages.components import hover_thumbnails
from probe_core.figures import COLOR_BY, embedding_figure, map_frame

MAX_HOVER_THUMBNAILS = 2000

current = shared.require_results()
if current is not None:
    st.title("Map of the embeddings")
    method_col, dims_col, color_col, neighbours_col, dist_col = st.columns(5)
    method = method_col.radio("Method", ["umap", "pca"], format_func=str.upper, key="map_method")
    dims = dims_col.radio("Dimensions", [2, 3], key="map_dims", format_func=lambda d: f"{d}-D")
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
        "UMAP neighbours", 2, 100, 15, key="map_neighbours", disabled=method != "umap"
    )
    min_dist = dist_col.slider(
        "UMAP min. distance", 0.0, 0.99, 0.1, key="map_min_dist", disabled=method != "umap"
    )
    projection = shared.projection_for(current, method, dims, n_neighbors, min_dist)
    figure = embedding_figure(projection, current.embeddings, current.result, color_by=color_by)
    figure.update_layout(height=620, dragmode="lasso" if dims == 2 else None)
    event = st.plotly_chart(
        figure,
        key="map",
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        width="stretch",
    )
    if len(current.embeddings) <= MAX_HOVER_THUMBNAILS:
        hover_thumbnails("map", shared.thumbnails_for(current, range(len(current.embeddings))))
    st.caption("Hover a point for its thumbnail; drag a box or lasso to select images.")

    selected = sorted({int(p["customdata"][1]) for p in (event.selection.points if event else [])})
    if selected:
        frame = map_frame(projection, current.embeddings, current.result).iloc[selected]
        st.subheader(f"{len(selected)} selected images")
        st.download_button(
            "Download selection as CSV",
            frame[["path", "true", "predicted", "split"]].to_csv(index=False),
            file_name="selection.csv",
            mime="text/csv",
        )
        thumbs = shared.thumbnails_for(current, selected[:60])
        grid = st.columns(8)
        for position, index in enumerate(selected[:60]):
            with grid[position % 8]:
                if index in thumbs:
                    st.image(thumbs[index], width=80)
                st.caption(current.embeddings.paths[index])
        if len(selected) > 60:
            st.caption(f"… and {len(selected) - 60} more in the CSV.")
