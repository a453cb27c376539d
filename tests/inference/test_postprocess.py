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


def test_region_rules_send_stray_pieces_to_the_enclosing_region():
    from medseg.inference.postprocess import region_rules
    from medseg.io.labels import LabelScheme

    # BraTS-like nesting: whole tumour [1, 2, 3] > tumour core [2, 3] > enhancing [3].
    scheme = LabelScheme.parse({"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": [3]}, [1, 2, 3])
    rules = {r["name"]: r for r in region_rules(scheme)}
    assert [rules[n]["fallback"] for n in ("whole", "core", "enhancing")] == [0, 1, 2]
    lab = np.zeros((12, 12), np.uint8)
    lab[1:9, 1:9] = 1
    lab[3:7, 3:7] = 2
    lab[4:6, 4:6] = 3
    lab[1, 7] = 3  # an enhancing speck inside the whole tumour, away from the core
    lab[11, 11] = 2  # a core speck outside everything
    out = apply_postprocessing(lab, {"regions": [rules["enhancing"]]})
    assert out[1, 7] == 2 and (out == 3).sum() == 4  # the speck stays tumour core
    out = apply_postprocessing(lab, {"regions": [rules["whole"]]})
    assert out[11, 11] == 0 and out[1, 7] == 3  # an outer piece goes, nested values and all
    out = apply_postprocessing(lab, {"regions": [rules["core"]]})
    assert out[11, 11] == 1 and out[1, 7] == 1  # each of the two specks is a core piece: whole tumour now


def test_region_choice_scores_region_masks():
    from medseg.io.labels import LabelScheme

    scheme = LabelScheme.parse({"background": 0, "organ": [1, 2], "lesion": [2]}, [1, 2])
    ref = np.zeros((20, 20), np.uint8)
    ref[2:12, 2:12] = 1
    ref[5:8, 5:8] = 2
    pred = ref.copy()
    pred[9, 9] = 2  # a lesion speck inside the organ: removing it helps the lesion, the organ keeps it
    pred[18, 18] = 1  # an organ speck outside: removing it helps the organ
    rules = choose_rules([pred], [ref], scheme)
    # The foreground rule takes the outside speck; per class, the lesion speck would become
    # background and cost the organ, per region it becomes organ.
    assert rules["foreground"] is True and [r["name"] for r in rules["regions"]] == ["lesion"]
    assert rules["classes"] == [] and set(rules["evidence"]["per_region"]) == {"organ", "lesion"}
    out = apply_postprocessing(pred, rules)
    assert (out == ref).all()
