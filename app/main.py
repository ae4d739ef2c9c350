"""Entry point of the dashboard: `mtu app` (or `make run`) starts it with its settings
(core.cli.STREAMLIT_OPTIONS) and its worker. The address of a result, ?run=L3&view=conflicts,
opens the Interference page on it; that of a contrast, ?a=L1&b=L2&view=attack, the Contrast page."""

import sys
from pathlib import Path

import streamlit as st

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # main.py runs on every page switch: once is enough
    sys.path.insert(0, ROOT)

st.set_page_config(page_title="Multi-task unlearning", layout="wide")
PAGES = Path(__file__).parent / "pages"
ICONS = {"model": "deployed_code", "select": "select", "unlearn": "content_cut", "interference": "monitoring",
         "compare": "leaderboard", "contrast": "compare_arrows", "explain": "visibility",
         "history": "history"}
pages = {name: st.Page(str(PAGES / f"{name}.py"), title=name.capitalize(), icon=f":material/{icon}:",
                      url_path=name, default=name == "model") for name, icon in ICONS.items()}
page = st.navigation(list(pages.values()))
if "app.state" not in sys.modules:
    # the first page this server draws imports PyTorch and the engine (seconds): say so at once
    # rather than leave the page blank
    starting = st.empty()
    with starting.status("Starting the dashboard: loading PyTorch and the unlearning engine "
                         "(once per server)", expanded=False):
        import app.state  # noqa: F401
    starting.empty()
# a shared result (?run=L3&view=..., or a contrast ?a=L1&b=L2&view=...) opens its page; outside a
# Streamlit run (a process spawned from one that ran this file as __main__) the page has no title,
# and nothing is switched
shared = "run" if "run" in st.query_params else "a" if "a" in st.query_params else None
if getattr(page, "title", None) == "Model" and shared:
    st.switch_page(pages["interference" if shared == "run" else "contrast"],
                   query_params=st.query_params.to_dict())
page.run()
