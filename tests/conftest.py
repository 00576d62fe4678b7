"""Fixtures shared by several test files, built once per test run."""

import pytest
from search_fixtures import build_search_model, make_people


@pytest.fixture(scope='session')
def search_setup(tmp_path_factory):
    """A tiny model trained to find each generated person, and its gallery.

    Returns:
        dict: ``config``, ``checkpoint``, ``gallery`` (the image folder) and
        ``people`` (``make_people``'s records).
    """
    root = tmp_path_factory.mktemp('search_model')
    people = make_people(root / 'gallery')
    setup = build_search_model(root, people)
    return dict(setup, gallery=str(root / 'gallery'), people=people)
