"""The lab: experiments as configs and run directories (docs/cli.md, docs/sweeps.md).

``config`` (TOML experiment configs), ``experiments`` (one run into its directory, the main job,
the gradient check), ``sweep`` (grids of runs on local processes or Dask clusters) and ``plots``
(figures drawn from run directories alone).
"""
