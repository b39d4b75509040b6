"""Metrics on cases small enough to compute by hand."""
import numpy as np
import pytest

from spoofsdk import metrics as m


def test_error_rates_by_hand():
    labels = [1, 0, 1, 0]
    scores = [0.9, 0.8, 0.7, 0.6]
    r = m.error_rates(labels, scores, 0.75)
    # accepted: 0.9 (real), 0.8 (attack) -> APCER 1/2; rejected real: 0.7 -> BPCER 1/2
    assert (r.apcer, r.bpcer, r.acer, r.accuracy) == (0.5, 0.5, 0.5, 0.5)
    # score == threshold is accepted
    assert m.error_rates([1, 0], [0.5, 0.4], 0.5).bpcer == 0.0


def test_auc_by_hand():
    assert m.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(1.0)
    # real-attack pairs won by the real sample: (.9>.8), (.9>.6), (.7>.6) of 4 -> 0.75
    assert m.roc_auc([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6]) == pytest.approx(0.75)
    assert m.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert m.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.3, 0.1]) == pytest.approx(0.0)


def test_eer_by_hand():
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    scores = [0.9, 0.8, 0.6, 0.4, 0.7, 0.5, 0.3, 0.2]
    rate, thr = m.eer(labels, scores)
    # at threshold 0.6: one real of four rejected (0.4), one attack of four accepted (0.7)
    assert rate == pytest.approx(0.25)
    r = m.error_rates(labels, scores, thr)
    assert r.apcer == pytest.approx(0.25) and r.bpcer == pytest.approx(0.25)
    assert m.eer([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1])[0] == pytest.approx(0.0)


def test_threshold_at_apcer():
    attacks = np.linspace(0.05, 1.0, 20)  # 20 attacks: 5 % = one attack may pass
    reals = np.array([0.97, 0.99, 0.5])
    labels = np.r_[np.zeros(20), np.ones(3)]
    scores = np.r_[attacks, reals]
    thr = m.threshold_at_apcer(labels, scores, 0.05)
    assert attacks[-2] < thr <= np.nextafter(attacks[-2], 1)  # just above the second-highest attack
    assert m.error_rates(labels, scores, thr).apcer == pytest.approx(0.05)
    assert m.error_rates(labels, scores, thr).bpcer == pytest.approx(1 / 3)  # 0.5 rejected; 0.97, 0.99 pass
    assert m.threshold_at_apcer(labels, scores, 0.0) > 1.0 - 1e-12  # no attack may pass
    assert m.bpcer_at_apcer(labels, scores, 0.05) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        m.threshold_at_apcer(labels, scores, 1.5)


def test_confusion_and_report():
    cm = m.confusion_matrix([0, 0, 1, 1, 1], [0.1, 0.9, 0.8, 0.7, 0.2], 0.5)
    assert cm.tolist() == [[1, 1], [1, 2]]
    rep = m.classification_report([0, 0, 1, 1, 1], [0.1, 0.9, 0.8, 0.7, 0.2], 0.5)
    assert rep["real"]["precision"] == pytest.approx(2 / 3) and rep["real"]["recall"] == pytest.approx(2 / 3)
    assert rep["spoof"]["support"] == 2


def test_bad_metric_inputs():
    with pytest.raises(ValueError):
        m.error_rates([1, 0], [0.5], 0.5)
    with pytest.raises(ValueError):
        m.roc_auc([1, 1], [0.2, 0.3])
    with pytest.raises(ValueError):
        m.error_rates([1, 2], [0.2, 0.3], 0.5)
    with pytest.raises(ValueError):
        m.error_rates([1, 0], [np.nan, 0.3], 0.5)


def test_auc_works_with_numpy_1(monkeypatch):
    # Issue 12 item 11: numpy>=1.24 is declared (picamera2 needs NumPy 1.x) but np.trapezoid is NumPy 2 only.
    import importlib

    import spoofsdk.metrics as metrics

    reference = getattr(np, "trapezoid", None) or getattr(np, "trapz")
    monkeypatch.delattr(np, "trapezoid", raising=False)
    monkeypatch.setattr(np, "trapz", reference, raising=False)  # what NumPy 1.x has
    try:
        reloaded = importlib.reload(metrics)
        assert reloaded.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    finally:
        monkeypatch.undo()
        importlib.reload(metrics)


def test_threshold_at_bpcer_by_hand():
    from spoofsdk.metrics import threshold_at_bpcer

    labels = [1, 1, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.65]
    assert threshold_at_bpcer(labels, scores, 0.0) == 0.6  # every real accepted, as high as possible
    assert threshold_at_bpcer(labels, scores, 0.25) == 0.7  # one real of four may be rejected
    assert threshold_at_bpcer(labels, scores, 1.0) > 0.9


def test_a_score_that_is_not_a_number_is_refused_and_located():
    """No AUC over a NaN (a crop the model could not score): the error says how many and where."""
    scores = np.linspace(0, 1, 10)
    scores[[3, 7]] = [np.nan, np.inf]
    with pytest.raises(ValueError, match=r"2 of 10 are not \(at index 3, 7\)"):
        m.roc_auc(np.arange(10) % 2, scores)
