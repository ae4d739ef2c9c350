"""Issue 19: the first open of the dashboard. Its first page imports the engine before it can
draw anything (app/main.py shows a status meanwhile): what it imports is kept to what a page
needs, and the libraries that only some results need (torchvision for its DeepLab head, sklearn
for the attacks, scipy.stats for the tests of the bench) are imported where they are used."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFERRED = ("torchvision", "sklearn", "scipy.stats", "torch._dynamo")


def test_the_dashboard_imports_no_library_a_first_page_does_not_need():
    code = ("import sys; import app.state; "
            f"print(','.join(m for m in {DEFERRED!r} if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "", f"imported when the dashboard starts: {done.stdout.strip()}"


def test_the_deferred_libraries_still_serve_their_features():
    import numpy as np
    import torch

    from core.evaluation.attack import attack_summary
    from core.evaluation.stats import wilcoxon_p
    from core.models.heads import ASPPHead

    assert attack_summary(np.array([2.0, 3.0]), np.array([0.0, 1.0]))["auc"] == 1.0
    assert 0 < wilcoxon_p([1.0, 2.0, 3.0, -0.5]) <= 1
    head = ASPPHead([8, 16], 3, width=8).eval()
    assert head([torch.zeros(1, 8, 8, 8), torch.zeros(1, 16, 4, 4)]).shape[:2] == (1, 3)
