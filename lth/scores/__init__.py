"""Pruning scores. Each is a pure function (apply_fn, variables, masks, batch | None, rng) → pytree
shaped like variables['params']; higher scores are kept. Each is registered below, one line each, in
lth.registry.SCORES as a Score (function, data needs, options declared beside it); Scorer binds one to
a model and the config's options. A score from outside the package: lth.register('score', NAME, Score(...))."""
from lth.registry import SCORES
from lth.scores import basic, force, grasp, ntksap, obd, phew, prospr, snip, synflow
from lth.scores.score import Score, data_free  # noqa: F401
from lth.scores.scorer import Scorer, make_scorer  # noqa: F401

GRASP = {"batches": "batches", "temperature": "grasp_temperature"}
SCORES.add("magnitude", Score(basic.magnitude, False))
SCORES.add("random", Score(basic.random, False))
SCORES.add("snip", Score(snip.snip, True, {"batches": "batches"}))
SCORES.add("grasp", Score(grasp.grasp, True, GRASP, prepare=grasp.prepare, declares=grasp.OPTIONS))
SCORES.add("grasp_abs", Score(grasp.grasp_abs, True, GRASP, prepare=grasp.prepare, declares=grasp.OPTIONS))
# 100 rounds: the SynFlow code's prune_epochs for synflow (Results/data/singleshot/*/args.json)
SCORES.add("synflow", Score(synflow.synflow, False, {"precision": "synflow_precision"},
                            {"precision": synflow.PRECISIONS},
                            synflow.prepare, rounds=100, declares=synflow.OPTIONS))
SCORES.add("obd", Score(obd.obd, True, {"method": "obd_method", "probes": "obd_probes"}, {"method": obd.METHODS},
                        declares=obd.OPTIONS))
# 10 rounds: naver/force train_cifar_tiny_imagenet.py --num_steps default (its README's runs use 60)
SCORES.add("iter_snip", Score(snip.snip, True, {"batches": "batches"}, rounds=10))
SCORES.add("force", Score(force.force, True, {"batches": "batches"}, rounds=10, regrow=True))
SCORES.add("prospr", Score(prospr.prospr, True, {"steps": "prospr_steps", "lr": "prospr_lr"}, declares=prospr.OPTIONS))
# 20 rounds: YiteWang/NTK-SAP scripts/run.sh --prune-epochs 20
SCORES.add("ntksap", Score(ntksap.ntksap, False, ntksap.READS, prepare=ntksap.prepare, rounds=20,
                           declares=ntksap.OPTIONS, stats=True))
# one round: PHEW builds its mask at the target density (ShreyasMalakarjunPatil/PHEW PHEW/phew.py)
SCORES.add("phew", Score(phew.phew, False, phew.READS, prepare=phew.prepare, declares=phew.OPTIONS, host=True,
                         density=True, order=True))
