"""Choosing encoders in the app: the picker of the Data page (what is on disk first, then each
family's short list, and a field for any name), the Compare page's ready sets, and weights
fetched with a live progress bar (MB and MB/s) before a model loads. What is offered comes
from the library's catalogue (``probe_core.encoders``); nothing here describes an encoder."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from probe_core.encoders import (
    FAMILIES,
    NAME_FORMS,
    DownloadProgress,
    EncoderError,
    EncoderInfo,
    ReadySet,
    describe,
    download_size,
    fetch_weights,
    needs_download,
)
from probe_core.encoders.hub import hub_cache_dir
from studio.progress import ProgressBar

ON_DISK = "on disk"
ON_DISK_TITLE = "in the Hugging Face cache"
FAMILY_KEY = "encoder_family"
CUSTOM_KEY = "custom_encoder"
NAME_HELP = (
    "Any encoder, by a name in one of these forms: "
    + ", ".join(f"`{form}`" for form in NAME_FORMS)
    + ". Hub models download once into the Hugging Face cache; the size and where it goes"
    " are shown before the download starts."
)


def grouped(infos: Sequence[EncoderInfo]) -> dict[str, list[EncoderInfo]]:
    """The picker's groups: every model already on disk first, then each family's list."""
    groups = {ON_DISK: [info for info in infos if info.on_disk]}
    for family in FAMILIES:
        groups[family] = [info for info in infos if info.family == family and not info.on_disk]
    return {group: listed for group, listed in groups.items() if listed}


def group_title(group: str) -> str:
    return ON_DISK_TITLE if group == ON_DISK else FAMILIES[group].title


def encoder_picker(current: str, infos: Sequence[EncoderInfo]) -> str:
    """The family, a model of its list, and any typed name (which wins); the chosen name."""
    groups = grouped(infos)
    names = list(groups)
    start = next((g for g in names if any(i.name == current for i in groups[g])), names[0])
    group = st.radio(
        "Family",
        names,
        index=names.index(start),
        format_func=lambda g: f"{g} ({len(groups[g])})" if g == ON_DISK else g,
        captions=[group_title(g) for g in names],
        horizontal=True,
        key=FAMILY_KEY,
    )
    listed = {info.name: info for info in groups[group]}
    chosen = st.selectbox(
        "Model",
        list(listed),
        index=list(listed).index(current) if current in listed else 0,
        format_func=lambda name: listed[name].label,
        key=f"encoder_in_{group}",
    )
    typed = st.text_input(
        "…or any encoder name",
        placeholder="timm:convnext_base.fb_in22k, hf:facebook/dinov2-small, hf:/models/mine",
        help=NAME_HELP,
        key=CUSTOM_KEY,
    ).strip()
    name = typed or chosen
    explain(name, infos)
    return name


def explain(name: str, infos: Sequence[EncoderInfo]) -> None:
    """A caption under the picker: what the chosen encoder is and whether it downloads; for
    a typed name, what is wrong with it when it cannot be one."""
    try:
        info = describe(name, list(infos))
        download = needs_download(name)  # fresh: the list is rechecked every few minutes
    except EncoderError as error:
        st.warning(str(error))
        return
    if download:
        size = hub_download_size(name)
        amount = f" of {size / 1e6:,.1f} MB" if size else ""
        unknown = "" if size else " (the hub did not tell its size: it may be out of reach)"
        status = f"needs download{amount} into {hub_cache_dir()}{unknown}"
    else:
        status = "on disk" if info.needs_download else info.status
    st.caption(f"Runs with **{name}**: {info.description} · {status}")


@st.cache_data(ttl=300, show_spinner=False)
def hub_download_size(name: str) -> int | None:
    """``download_size`` of ``name``, asked of the hub once every few minutes."""
    return download_size(name)


def ready_set_buttons(sets: Sequence[ReadySet], key: str) -> None:
    """One button per ready set; pressing one puts its encoders into the selection ``key``."""

    def choose(names: tuple[str, ...]) -> None:
        st.session_state[key] = list(names)

    st.markdown("**Ready sets** (they fill the encoders below)")
    row = st.container(horizontal=True)
    for ready in sets:
        row.button(
            ready.label,
            key=f"ready_{ready.title}",
            on_click=choose,
            args=(ready.names,),
            help=", ".join(ready.names)
            + (f". Downloads: {', '.join(ready.downloads)}" if ready.downloads else ""),
        )


def download_weights(name: str) -> bool:
    """Get the weights of ``name`` into the Hugging Face cache with a progress bar (its size
    and destination first, then MB and MB/s), when the cache lacks them (True then); raises
    ``EncoderError`` (offline: naming the model and the offline options) after clearing it."""
    if not needs_download(name):
        return False
    bar = ProgressBar(f"{name}: asking the Hugging Face hub for its size…")
    context = get_script_run_ctx()

    def update(report: DownloadProgress) -> None:
        if context is not None and get_script_run_ctx() is None:
            # a download library's own thread: draw through this session's script run
            add_script_run_ctx(threading.current_thread(), context)
        bar.update(report.fraction or 0.0, report.describe(), final=report.finished)

    try:
        fetch_weights(name, update)
    except EncoderError:
        bar.empty()
        raise
    return True
