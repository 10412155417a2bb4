"""The filters notebook executes (quick mode) and prints the paper's mask counts."""

from notebook_runner import outputs_text, run_notebook


def test_filters_notebook(monkeypatch):
    monkeypatch.setenv("JAXHFC_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the kernel is a fresh process: one CPU device is enough
    text = outputs_text(run_notebook("01_filters.ipynb"))
    assert "r= 4: keeps   45 of 1024" in text and "r=16: keeps  793 of 1024" in text
    err = float(text.split("low + high == x:")[1].split()[0])
    assert err < 1e-3
