"""Probe Studio: drop a folder of images, see how well a frozen encoder separates its classes."""

from probe_core.openmp import let_idle_threads_sleep

let_idle_threads_sleep()  # before the pages load torch and its OpenMP runtime

import streamlit as st

from probe_core.allocator import keep_freed_memory_for_reuse
from studio import shared

keep_freed_memory_for_reuse()

# An emoji icon is drawn by the browser itself; a ":material/...:" page icon would be fetched
# from Google's font server on every page load (the sidebar's page icons are bundled).
st.set_page_config(page_title="Probe Studio", page_icon="🔬", layout="wide")
shared.warm_up_maps()  # UMAP's compiled code loads in the background, once per server process
shared.freeze_loaded_objects()  # Streamlit's collection after each run skips the libraries

navigation = st.navigation(
    [
        st.Page("app_pages/data.py", title="Data", icon=":material/folder_open:", default=True),
        st.Page("app_pages/results.py", title="Results", icon=":material/monitoring:"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("app_pages/map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page(
            "app_pages/predict_export.py", title="Predict & export", icon=":material/download:"
        ),
        st.Page("app_pages/live.py", title="Live", icon=":material/videocam:"),
    ]
)
navigation.run()
