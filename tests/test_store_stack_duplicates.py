"""A layer held twice by one image is stacked once, where it is highest.

overlayfs refuses a lower dir named twice (mount fails with ELOOP); ``--force-build-metadata``
gives two identical empty layers in a row, and an image may re-add a layer after another one.
"""

from pybuildless.store.stack import topmost_occurrences


def test_the_highest_copy_of_a_repeated_layer_is_kept_in_order():
    # lowest first: base, A, B, A, C, C  ->  base, B, A, C
    stack = ["base", "A", "B", "A", "C", "C"]
    assert topmost_occurrences(stack, key=lambda x: x) == ["base", "B", "A", "C"]


def test_distinct_layers_are_left_as_they_are():
    stack = [("base", 1), ("A", 2), ("B", 3)]
    assert topmost_occurrences(stack, key=lambda x: x[0]) == stack


def test_the_key_decides_what_is_the_same_layer():
    stack = [("/s/a", 1), ("/s/b", 2), ("/s/a", 3)]
    assert topmost_occurrences(stack, key=lambda x: x[0]) == [("/s/b", 2), ("/s/a", 3)]
