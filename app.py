"""Probe Studio: drop a folder of images, see how well a frozen encoder separates its classes."""

from probe_core.openmp import let_idle_threads_sleep

let_idle_threads_sleep()  # before the pages load torch and its OpenMP runtime

import streamlit as st

from pages import shared
from probe_core.allocator import keep_freed_memory_for_reuse

keep_freed_memory_for_reuse()

st.set_page_config(page_title="Probe Studio", page_icon=":material/biotech:", layout="wide")
shared.warm_up_maps()  # UMAP's compiled code loads in the background, once per server process

navigation = st.navigation(
    [
        st.Page("pages/data.py", title="Data", icon=":material/folder_open:", default=True),
        st.Page("pages/results.py", title="Results", icon=":material/monitoring:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page("pages/predict_export.py", title="Predict & export", icon=":material/download:"),
    ]
)
navigation.run()
