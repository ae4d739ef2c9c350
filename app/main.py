"""Entry point of the dashboard: `streamlit run app/main.py` (or `make run`)."""

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

st.set_page_config(page_title="Multi-task unlearning", layout="wide")
PAGES = Path(__file__).parent / "pages"
pages = [st.Page(str(PAGES / "model.py"), title="Model", icon="🧠", default=True)] + [
    st.Page(str(PAGES / f"{name}.py"), title=name.capitalize(), icon=icon, url_path=name)
    for name, icon in [("select", "🎯"), ("unlearn", "✂️"), ("interference", "📊"), ("compare", "🏁"),
                       ("explain", "🔍"), ("history", "🗂️")]]
st.navigation(pages).run()
