"""Library layer: masks (bool pytrees shaped like params), selection and prune rules (exact top-k,
global / layerwise, overrides; N:M patterns in nm.py), layer-density distributions, score-and-prune
rounds at init, and the mask updates of sparse training (GMP, SET, RigL). Pure functions on
pytrees; imports only lth.errors, lth.registry and the other library packages."""
