"""The dgml_viz Streamlit app (entry point: ``streamlit run app/main.py``)."""
