"""Compression layer: what makes a ticket physically smaller or faster, on (model, params, masks):
`shrink` (dead units, heads and MLPs removed from the arrays), `factorize` (truncated SVD),
`quantize` (int8 with qwix), `speed` (latency and throughput side by side) and `sparse_exec`
(BCSR sparse matmuls against dense)."""
