"""Live: the camera's frames (or a dropped image) through the encoder and the session's probe,
the class probabilities as bars that follow the camera, with the frame rate."""

from __future__ import annotations

import streamlit as st

from probe_core.encoders import EncoderError
from probe_core.wording import caption_text
from studio import shared
from studio.webcam import live_camera


@st.fragment
def live_view(current: shared.Session) -> None:
    """Only this fragment reruns for each frame: the page around it stays as it is."""
    weights = shared.session_probe(current)
    try:
        encoder = shared.encoder_for_session(weights.encoder_name)
    except EncoderError as error:
        st.error(f"**{weights.encoder_name}** could not be loaded: {error}")
        return
    camera = live_camera(encoder, weights, key=f"live_{id(current.result)}")
    if camera in {"denied", "missing", "insecure", "busy", "failed"}:
        st.info(
            "Without the camera, drop an image on the view (or choose one) to classify it.",
            icon=":material/no_photography:",
        )


st.title("Live")
current = shared.require_results()
if current is not None:
    if current.precomputed:
        st.info(
            f"This probe was fitted on precomputed embeddings (encoder"
            f" `{current.embeddings.encoder_id}`): the studio cannot run that encoder on camera"
            " frames. Open the image folder (or record classes on the Data page's Webcam tab)"
            " to see live predictions."
        )
    else:
        st.caption(
            f"Each frame goes through **{current.settings.encoder}** and the probe fitted on"
            f" every image of “{caption_text(current.label)}”: the same probe that Predict &"
            " export downloads. Frames go only to this studio's server and are not kept.",
            unsafe_allow_html=True,
        )
        live_view(current)
