"""What the Streamlit pages share: session state, cached resources, small components."""
