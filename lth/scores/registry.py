"""Score name → function, and which scores need data."""
from lth.errors import check_choice
from lth.scores import basic, grasp, obd, snip, synflow

SCORES = {
    "magnitude": basic.magnitude,
    "random": basic.random,
    "snip": snip.snip,
    "grasp": grasp.grasp,
    "grasp_abs": grasp.grasp_abs,
    "synflow": synflow.synflow,
    "obd": obd.obd,
}
DATA_FREE = ("magnitude", "random", "synflow")


def get(name: str):
    check_choice("score", name, SCORES)
    return SCORES[name]
