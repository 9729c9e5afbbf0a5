"""Score name → function."""
from lth.errors import check_choice
from lth.scores import basic

SCORES = {"magnitude": basic.magnitude, "random": basic.random}


def get(name: str):
    check_choice("score", name, SCORES)
    return SCORES[name]
