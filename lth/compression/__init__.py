"""Compression layer: what makes a ticket physically smaller or faster, on (model, params, masks):
`shrink` (dead units, heads and MLPs removed from the arrays), `factorize` (truncated SVD),
`quantize` (int8 with qwix; sizes in bytes), `nm` (N:M sparsity: its pattern, bytes, compressed form
and matmul), `speed` (latency and throughput side by side) and `sparse_exec` (BCSR and N:M sparse
matmuls against dense)."""
