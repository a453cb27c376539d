import numpy as np

from medseg.inference.postprocess import apply_postprocessing, choose_rules, largest_component


def test_largest_component_counts_diagonal_neighbours():
    m = np.zeros((5, 5, 5), bool)
    m[1, 1, 1] = m[2, 2, 2] = True  # corner-connected pair
    m[4, 4, 0] = True
    out = largest_component(m)
    assert out.sum() == 2 and out[1, 1, 1] and not out[4, 4, 0]


def test_rules_remove_only_what_they_say():
    lab = np.zeros((1, 10, 10), np.uint8)
    lab[0, 1:4, 1:4] = 1
    lab[0, 8, 8] = 1  # stray organ voxel
    lab[0, 6, 1] = 2  # stray lesion voxel, alone
    assert (apply_postprocessing(lab, {"classes": [1]}) == 1).sum() == 9
    assert (apply_postprocessing(lab, {"classes": [1]}) == 2).sum() == 1
    out = apply_postprocessing(lab, {"foreground": True})
    assert out[0, 8, 8] == 0 and out[0, 6, 1] == 0 and (out == 1).sum() == 9


def test_choice_follows_the_evidence():
    ref = np.zeros((20, 20), np.uint8)
    ref[2:8, 2:8] = 1
    ref[12:18, 12:18] = 2
    noisy = ref.copy()
    noisy[0, 19] = 1  # a false-positive speck of class 1
    # Class 2 is really two blobs in the reference: keeping one would hurt.
    ref2 = ref.copy()
    ref2[12:14, 2:4] = 2
    pred2 = ref2.copy()
    pred2[0, 19] = 1
    rules = choose_rules([noisy, pred2], [ref, ref2], [1, 2])
    assert 1 in rules["classes"] and 2 not in rules["classes"]
    assert rules["foreground"] is False  # removing all but one foreground blob drops class 2
