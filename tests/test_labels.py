import pytest

from p2p_plugin.labels import LabelError, LabelSpace, derive_safe_labels


def test_integer_labels_get_i_plus_n():
    space = LabelSpace.build(["0", "1"])
    assert space.safe_labels == ("2", "3")
    assert space.safe("1") == "3"
    assert space.project("3") == "1" and space.project("2") == "0" and space.project("1") == "1"
    assert space.all_labels == ("0", "1", "2", "3")


def test_non_contiguous_integer_labels_stay_disjoint():
    assert derive_safe_labels(["1", "2", "5"]) == ["7", "8", "11"]


def test_named_labels_require_safe_labels():
    with pytest.raises(LabelError, match="safe_labels"):
        LabelSpace.build(["negative", "positive"])
    space = LabelSpace.build(["negative", "positive"], ["bad", "good"])
    assert space.safe("positive") == "good" and space.project("bad") == "negative"


@pytest.mark.parametrize("labels,safe,msg", [
    (["0"], None, "at least two"),
    (["0", "0"], None, "duplicates"),
    (["0", "1"], ["2"], "one entry per label"),
    (["0", "1"], ["1", "2"], "disjoint"),
    (["0", "1"], ["5", "5"], "duplicates"),
])
def test_bad_label_sets(labels, safe, msg):
    with pytest.raises(LabelError, match=msg):
        LabelSpace.build(labels, safe)


def test_normalize_rejects_unknown_label():
    space = LabelSpace.build(["0", "1"])
    assert space.normalize(1) == "1" and space.normalize(" 0 ") == "0"
    with pytest.raises(LabelError, match="'7'"):
        space.normalize("7")
