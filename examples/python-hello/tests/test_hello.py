from hello import greeting


def test_greets_by_name():
    assert greeting("Ada") == "Hello, Ada!"


def test_greets_the_world_when_nobody_is_named():
    assert greeting("  ") == "Hello, world!"
