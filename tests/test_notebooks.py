"""The filters notebook executes (quick mode) and prints the paper's mask counts."""

from notebook_runner import outputs_text, run_notebook


def test_filters_notebook(monkeypatch):
    monkeypatch.setenv("JAXHFC_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # the kernel is a fresh process: one CPU device is enough
    text = outputs_text(run_notebook("01_filters.ipynb"))
    assert "r= 4: keeps   45 of 1024" in text and "r=16: keeps  793 of 1024" in text
    err = float(text.split("low + high == x:")[1].split()[0])
    assert err < 1e-3


def test_own_data_and_model_notebook(monkeypatch):
    """A Flax model that is not jaxhfc's, trained in the notebook on real digits from an .npz
    written there; the analyses and PGD run on its logits function."""
    monkeypatch.setenv("JAXHFC_NOTEBOOK_QUICK", "1")
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    text = outputs_text(run_notebook("03_own_data_and_model.ipynb", timeout=120))
    assert "npz-digits-c1: train (1500, 8, 8, 1), test (297, 8, 8, 1)" in text
    acc = float(text.split("test accuracy of TinyNet:")[1].split()[0])
    assert acc > 0.8  # real digits are learnable in seconds; chance is 0.1
    assert "LFC at the corner equals the original accuracy: True" in text
    assert "heat map (8, 8)" in text and "PGD Linf eps 0.1" in text
