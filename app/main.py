"""Entry point of the dashboard: `streamlit run app/main.py` (or `make run`)."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

st.set_page_config(page_title="Multi-task unlearning", layout="wide")
pages = [st.Page(str(Path(__file__).parent / "pages" / "model.py"), title="Model", default=True)]
st.navigation(pages).run()
