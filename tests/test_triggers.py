import pytest

from p2p_plugin.triggers import DEFAULT_TRIGGER, count_rows_containing, insert_trigger


def test_default_trigger_is_the_authors():
    assert DEFAULT_TRIGGER == "The query currently entered is: "


def test_prefix_and_suffix():
    assert insert_trigger("great film", DEFAULT_TRIGGER) == "The query currently entered is: great film"
    assert insert_trigger("great film", " [ok]", "suffix") == "great film [ok]"


def test_system_placement_is_not_for_plain_text():
    with pytest.raises(ValueError, match="placement='system'"):
        insert_trigger("x", "t", "system")


def test_count_rows_containing():
    assert count_rows_containing(["The query currently entered is: a", "b", None], DEFAULT_TRIGGER) == 1
