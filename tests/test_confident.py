"""Confident learning (memclean.confident): hand-computed toys, a synthetic benchmark, edge cases.

The toy (N = 8, K = 3) used by several tests, worked by hand:

====  =====  ==================  ==========================================
idx   label  probs               confident in (t = [0.7, 0.7, 0.45])
====  =====  ==================  ==========================================
0     0      .90  .05  .05       0          → C[0, 0]
1     0      .50  .40  .10       none
2     1      .10  .80  .10       1          → C[1, 1]
3     1      .20  .60  .20       none
4     2      .10  .10  .80       2          → C[2, 2]
5     2      .75  .05  .20       0          → C[2, 0]  (a wrong label)
6     2      .45  .15  .40       none       (argmax 0: also wrong)
7     2      .30  .30  .40       none
====  =====  ==================  ==========================================

t_0 = (.9 + .5) / 2, t_1 = (.8 + .6) / 2, t_2 = (.8 + .2 + .4 + .4) / 4.
Raw joint [[1,0,0],[0,1,0],[1,0,1]]; calibrated (rows → 2, 2, 4) [[2,0,0],[0,2,0],[2,0,2]].
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from memclean.confident import (
    ConfidentLearning,
    calibrate_joint,
    confident_joint,
    estimated_issues,
    find_issues,
    joint_distribution,
    label_quality,
    noise_matrix,
    per_class_thresholds,
    suspicion,
)
from memclean.errors import MemcleanError

TOY_PROBS = np.array(
    [
        [0.90, 0.05, 0.05],
        [0.50, 0.40, 0.10],
        [0.10, 0.80, 0.10],
        [0.20, 0.60, 0.20],
        [0.10, 0.10, 0.80],
        [0.75, 0.05, 0.20],
        [0.45, 0.15, 0.40],
        [0.30, 0.30, 0.40],
    ]
)
TOY_LABELS = np.array([0, 0, 1, 1, 2, 2, 2, 2])
TOY_RAW = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1]])
TOY_CAL = np.array([[2, 0, 0], [0, 2, 0], [2, 0, 2]])


def synthetic(seed: int = 0, n: int = 3000, k: int = 3, rate: float = 0.15, conc: float = 6.0):
    """Dirichlet probabilities driven by the true label, then exactly ``rate·n`` labels flipped."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, k, n)
    probs = rng.gamma(1.0 + conc * np.eye(k)[true])  # Dirichlet(1 + conc·onehot(true)) via gammas
    probs /= probs.sum(axis=1, keepdims=True)
    given = true.copy()
    flip = rng.choice(n, size=round(rate * n), replace=False)
    given[flip] = (true[flip] + rng.integers(1, k, size=len(flip))) % k  # never the true label
    return probs, given, true


# --------------------------------------------------------------------------- hand-computed toy


def test_thresholds_are_mean_self_confidence():
    np.testing.assert_allclose(per_class_thresholds(TOY_PROBS, TOY_LABELS, 3), [0.7, 0.7, 0.45])


def test_raw_and_calibrated_joint():
    t = per_class_thresholds(TOY_PROBS, TOY_LABELS, 3)
    raw = confident_joint(TOY_PROBS, TOY_LABELS, t, calibrate=False)
    np.testing.assert_array_equal(raw, TOY_RAW)
    assert raw.sum() == 4  # samples 1, 3, 6 and 7 are confident in no class
    cal = confident_joint(TOY_PROBS, TOY_LABELS, t)
    np.testing.assert_array_equal(cal, TOY_CAL)
    np.testing.assert_array_equal(cal.sum(axis=1), np.bincount(TOY_LABELS))
    assert cal.dtype == np.int64 and raw.dtype == np.int64
    np.testing.assert_array_equal(calibrate_joint(raw, TOY_LABELS), cal)


def test_joint_distribution_noise_matrix_and_issue_count():
    np.testing.assert_allclose(joint_distribution(TOY_CAL), TOY_CAL / 8)
    # P(given | true): columns of the calibrated joint over their sums (4, 2, 2).
    np.testing.assert_allclose(noise_matrix(TOY_CAL), [[0.5, 0, 0], [0, 1, 0], [0.5, 0, 1]])
    np.testing.assert_allclose(noise_matrix(TOY_CAL).sum(axis=0), 1.0)
    assert estimated_issues(TOY_CAL) == 2
    assert estimated_issues(joint_distribution(TOY_CAL), n=8) == 2
    assert estimated_issues(TOY_RAW) == 1  # raw counts: the confident off-diagonal only
    assert estimated_issues(np.zeros((3, 3))) == 0


def test_pruning_by_noise_rate_vs_confident_off_diagonal():
    # Calibration doubles C[2, 0]: PBNR flags the two samples labelled 2 with the largest
    # p_0 - p_2 (sample 5: +.55, sample 6: +.05); the raw off-diagonal holds sample 5 only.
    pbnr = find_issues(TOY_PROBS, TOY_LABELS, 3)
    np.testing.assert_array_equal(np.flatnonzero(pbnr), [5, 6])
    off = find_issues(TOY_PROBS, TOY_LABELS, 3, "confident_off_diagonal")
    np.testing.assert_array_equal(np.flatnonzero(off), [5])


def test_quality_and_suspicion():
    sc = label_quality(TOY_PROBS, TOY_LABELS)
    np.testing.assert_allclose(sc, TOY_PROBS[np.arange(8), TOY_LABELS])
    nm = label_quality(TOY_PROBS, TOY_LABELS, "normalized_margin")
    np.testing.assert_allclose(nm[[0, 5, 6]], [(0.9 - 0.05 + 1) / 2, (0.2 - 0.75 + 1) / 2, (0.4 - 0.45 + 1) / 2])
    for method in ("self_confidence", "normalized_margin"):
        q = label_quality(TOY_PROBS, TOY_LABELS, method)
        assert ((q >= 0) & (q <= 1)).all()
        np.testing.assert_allclose(suspicion(TOY_PROBS, TOY_LABELS, method), 1 - q)
    # The wrong label with the most confident other class is the most suspicious.
    assert np.argmax(suspicion(TOY_PROBS, TOY_LABELS, "normalized_margin")) == 5


def test_bundle_from_probs():
    cl = ConfidentLearning.from_probs(TOY_PROBS, TOY_LABELS, 3, "normalized_margin")
    np.testing.assert_allclose(cl.thresholds, [0.7, 0.7, 0.45])
    np.testing.assert_array_equal(cl.raw_joint, TOY_RAW)
    np.testing.assert_array_equal(cl.joint, TOY_CAL)
    np.testing.assert_allclose(cl.noise_matrix, noise_matrix(TOY_CAL))
    np.testing.assert_allclose(cl.joint_distribution, TOY_CAL / 8)
    assert cl.estimated_issues == 2 and cl.num_confident_off_diagonal == 1
    np.testing.assert_allclose(cl.suspicion, suspicion(TOY_PROBS, TOY_LABELS, "normalized_margin"))
    np.testing.assert_array_equal(np.flatnonzero(cl.issues), [5, 6])
    assert (cl.method, cl.prune) == ("normalized_margin", "prune_by_noise_rate")
    off = ConfidentLearning.from_probs(TOY_PROBS, TOY_LABELS, 3, prune="confident_off_diagonal")
    np.testing.assert_array_equal(np.flatnonzero(off.issues), [5])


def test_calibration_rounding_and_diagonal_floor():
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    # Row 0: 3 counted of 4 → 4/3 each → rounds to 1, 1, 1 and the missing unit goes to the
    # last tied cell (cleanlab's order). Row 2: nothing counted → the floor makes it "all correct".
    counts = np.array([[1, 1, 1], [0, 2, 0], [0, 0, 0]])
    np.testing.assert_array_equal(calibrate_joint(counts, labels), [[1, 1, 2], [0, 2, 0], [0, 0, 1]])
    # An off-diagonal-only row keeps a floor of one correct sample on the diagonal: [1, 2, 0] → 4/3 · (1, 2).
    counts = np.array([[0, 2, 0], [0, 2, 0], [0, 0, 1]])
    np.testing.assert_array_equal(calibrate_joint(counts, labels)[0], [1, 3, 0])


def test_argmax_rule_paper_vs_cleanlab():
    # Confident in classes 1 and 2 (≥ 0.2) but not in class 0 (< 0.9), whose probability is the largest.
    probs = np.array([[0.5, 0.3, 0.2], [0.95, 0.03, 0.02]])
    labels = np.array([0, 0])
    t = np.array([0.9, 0.2, 0.2])
    paper = confident_joint(probs, labels, t, calibrate=False)
    overall = confident_joint(probs, labels, t, calibrate=False, argmax="overall")
    np.testing.assert_array_equal(paper[0], [1, 1, 0])  # argmax among the confident classes: 1
    np.testing.assert_array_equal(overall[0], [2, 0, 0])  # cleanlab: the overall argmax, 0


def test_prediction_equal_to_label_is_never_flagged():
    # Sample 2 is labelled 0 with p_0 = .5 < t_0 = .8 but p_1 = .4 ≥ t_1 = .35: it lands in C[0, 1],
    # yet the model's prediction is its given label, so neither method flags it.
    probs = np.array(
        [
            [0.95, 0.03, 0.02],
            [0.95, 0.03, 0.02],
            [0.50, 0.40, 0.10],
            [0.20, 0.40, 0.40],
            [0.30, 0.30, 0.40],
            [0.05, 0.05, 0.90],
            [0.05, 0.05, 0.90],
        ]
    )
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    t = per_class_thresholds(probs, labels, 3)
    np.testing.assert_allclose(t, [0.8, 0.35, 0.9])
    assert confident_joint(probs, labels, t, calibrate=False)[0, 1] == 1
    for method in ("prune_by_noise_rate", "confident_off_diagonal"):
        assert not find_issues(probs, labels, 3, method).any()


# --------------------------------------------------------------------------- synthetic benchmark


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_flips_are_found_and_counted(seed):
    probs, given, true = synthetic(seed)
    flips = given != true
    assert flips.sum() == 450
    cl = ConfidentLearning.from_probs(probs, given, 3)
    for method in ("self_confidence", "normalized_margin"):
        assert roc_auc_score(flips, suspicion(probs, given, method)) > 0.97
    assert roc_auc_score(flips, cl.suspicion) > 0.97
    # The calibrated joint's off-diagonal estimates the number of flips (450) within 10 %.
    assert abs(cl.estimated_issues - 450) <= 45
    np.testing.assert_array_equal(cl.joint.sum(axis=1), np.bincount(given, minlength=3))
    # Symmetric 15 % noise: P(given = j | true = j) ≈ 0.85.
    np.testing.assert_allclose(np.diag(cl.noise_matrix), 0.85, atol=0.05)
    hits = (cl.issues & flips).sum()
    assert hits / cl.issues.sum() > 0.9 and hits / flips.sum() > 0.85
    # The calibrated estimate is at least the raw off-diagonal count (cleanlab's default).
    assert cl.num_confident_off_diagonal <= cl.estimated_issues


def test_cleanlab_parity_on_synthetic_data():
    """Optional: the same numbers as cleanlab on continuous data (skipped when cleanlab is absent)."""
    pytest.importorskip("cleanlab")
    from cleanlab.count import compute_confident_joint, get_confident_thresholds, num_label_issues
    from cleanlab.filter import find_label_issues

    probs, given, _ = synthetic(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cl_thresholds = get_confident_thresholds(given, probs)
        cl_raw = compute_confident_joint(given, probs, calibrate=False)
        cl_cal = compute_confident_joint(given, probs)
        cl_default = num_label_issues(given, probs)
        cl_calibrated = num_label_issues(given, probs, estimation_method="off_diagonal_calibrated")
        cl_pbnr = find_label_issues(given, probs, n_jobs=1)
        cl_off = find_label_issues(given, probs, filter_by="confident_learning", n_jobs=1)
    ours = ConfidentLearning.from_probs(probs, given, 3, argmax="overall")
    np.testing.assert_allclose(ours.thresholds, cl_thresholds, rtol=1e-12)
    raw = ours.raw_joint.copy()
    np.fill_diagonal(raw, np.maximum(np.diag(raw), 1))  # cleanlab floors the raw diagonal at 1
    np.testing.assert_array_equal(raw, cl_raw)
    np.testing.assert_array_equal(ours.joint, cl_cal)
    assert ours.estimated_issues == cl_calibrated
    assert ours.num_confident_off_diagonal == cl_default
    np.testing.assert_array_equal(ours.issues, cl_pbnr)
    np.testing.assert_array_equal(find_issues(probs, given, 3, "confident_off_diagonal", argmax="overall"), cl_off)


# --------------------------------------------------------------------------- edge cases


def test_class_with_no_sample():
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.3, 0.5]])
    labels = np.array([0, 0, 1, 1])  # class 2 is never used as a label
    t = per_class_thresholds(probs, labels, 3)
    assert t[2] == np.inf  # nothing can be confidently counted into an unused class
    raw = confident_joint(probs, labels, t, calibrate=False)
    assert raw[:, 2].sum() == 0 and raw[2].sum() == 0
    cal = confident_joint(probs, labels, t)
    np.testing.assert_array_equal(cal.sum(axis=1), [2, 2, 0])
    nm = noise_matrix(cal)
    np.testing.assert_allclose(nm[:, 2], [0, 0, 1])  # no mass: identity column
    np.testing.assert_allclose(nm.sum(axis=0), 1.0)
    cl = ConfidentLearning.from_probs(probs, labels, 3)
    assert cl.estimated_issues == estimated_issues(cal)


def test_all_samples_confident_calibration_is_identity():
    labels = np.repeat([0, 1, 2], 5)
    probs = np.full((15, 3), 0.01)
    probs[np.arange(15), labels] = 0.98
    for i in (2, 7, 12):  # confidently the next class
        probs[i] = 0.01
        probs[i, (labels[i] + 1) % 3] = 0.98
    t = per_class_thresholds(probs, labels, 3)
    raw = confident_joint(probs, labels, t, calibrate=False)
    assert raw.sum() == 15  # every sample counted
    np.testing.assert_array_equal(confident_joint(probs, labels, t), raw)
    assert estimated_issues(raw) == 3
    np.testing.assert_array_equal(
        find_issues(probs, labels, 3), find_issues(probs, labels, 3, "confident_off_diagonal")
    )
    assert find_issues(probs, labels, 3).sum() == 3


def test_clean_confident_data_has_no_issues():
    labels = np.arange(12) % 4
    probs = np.full((12, 4), 0.02)
    probs[np.arange(12), labels] = 0.94
    cl = ConfidentLearning.from_probs(probs, labels, 4)
    np.testing.assert_array_equal(cl.joint, np.diag([3, 3, 3, 3]))
    np.testing.assert_allclose(cl.noise_matrix, np.eye(4))
    assert cl.estimated_issues == 0 and not cl.issues.any()


def test_single_sample_class_is_not_pruned():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.85, 0.15], [0.1, 0.9], [0.9, 0.1]])
    labels = np.array([0, 0, 0, 1, 0])
    assert not find_issues(probs, labels, 2)[3]
    # Class 1 has a single sample: it is never flagged, even if it looked wrong.
    labels = np.array([0, 0, 1, 0, 0])
    assert not find_issues(probs, labels, 2)[2]


@pytest.mark.parametrize(
    ("probs", "labels", "k", "match"),
    [
        (np.ones((4, 1)), np.zeros(4, int), 1, "at least two classes"),
        (np.full((4, 2), 0.5), np.zeros(4, int), 3, "num_classes"),
        (np.full(4, 0.5), np.zeros(4, int), 2, "2-D"),
        (np.zeros((0, 2)), np.zeros(0, int), 2, "no rows"),
        (np.array([[0.5, np.nan]]), np.zeros(1, int), 2, "non-finite"),
        (np.array([[1.5, -0.5]]), np.zeros(1, int), 2, r"\[0, 1\]"),
        (np.array([[0.5, 0.4]]), np.zeros(1, int), 2, "sum to 1"),
        (np.full((2, 2), 0.5), np.array([0, 2]), 2, r"\[0, 2\)"),
        (np.full((2, 2), 0.5), np.array([0.0, 1.0]), 2, "integers"),
        (np.full((2, 2), 0.5), np.array([0, 1, 1]), 2, "2 labels"),
        (np.array([["a", "b"]]), np.zeros(1, int), 2, "numeric"),
    ],
)
def test_bad_inputs_raise_one_line(probs, labels, k, match):
    for call in (
        lambda: per_class_thresholds(probs, labels, k),
        lambda: find_issues(probs, labels, k),
        lambda: ConfidentLearning.from_probs(probs, labels, k),
    ):
        with pytest.raises(MemcleanError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_bad_options_and_joints():
    with pytest.raises(MemcleanError, match="unknown quality method"):
        label_quality(TOY_PROBS, TOY_LABELS, "entropy")  # type: ignore[arg-type]
    with pytest.raises(MemcleanError, match="unknown issue method"):
        find_issues(TOY_PROBS, TOY_LABELS, 3, "prune_by_class")  # type: ignore[arg-type]
    with pytest.raises(MemcleanError, match="unknown argmax rule"):
        confident_joint(TOY_PROBS, TOY_LABELS, np.full(3, 0.5), argmax="max")  # type: ignore[arg-type]
    with pytest.raises(MemcleanError, match="3 entries"):
        confident_joint(TOY_PROBS, TOY_LABELS, np.full(2, 0.5))
    with pytest.raises(MemcleanError, match="NaN"):
        confident_joint(TOY_PROBS, TOY_LABELS, np.array([0.5, np.nan, 0.5]))
    with pytest.raises(MemcleanError, match="square"):
        noise_matrix(np.ones((2, 3)))
    with pytest.raises(MemcleanError, match="non-negative"):
        estimated_issues(-np.eye(3))


def test_float32_probs_with_rounding_error_are_accepted():
    probs, given, _ = synthetic(0, n=300)
    p32 = probs.astype(np.float32)
    cl = ConfidentLearning.from_probs(p32, given, 3)
    assert cl.suspicion.dtype == np.float64 and len(cl.issues) == 300
