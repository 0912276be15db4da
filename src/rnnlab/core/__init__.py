"""The derivation in code: the reference engine (docs/derivation.md, docs/architecture.md).

``spec`` (what the network computes), ``params`` (layout, initialisers), ``activations`` and
``losses`` (element-wise functions, fused output-and-loss gradients), ``inputs`` (what a batch
must look like), ``cell`` (one layer's recurrence over time, the cell every learning rule shares),
``network`` (stacked, bidirectional layers, the head, the set-ups: ``forward``,
``loss_and_grad``, ``backward``) and ``engine`` (the contract every engine keeps).  Pure NumPy
functions, equations cited, shapes commented; nothing here imports another floor.
"""
