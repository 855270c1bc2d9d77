"""The denoising wing: a trained model applied to stacks of any size.

- :mod:`.model` — :class:`~.model.TrainedModel`: method, weights, normalization (what a model
  file holds and an out-of-core worker rebuilds)
- :mod:`.denoiser` — :class:`~.denoiser.Denoiser`: a TrainedModel that denoises and writes
  every output (``api.Denoiser``)
- :mod:`.predict` — the ensemble's views, the pass plan, and the one loop over batches and tiles
- :mod:`.tiling` — where tiles start, which part of each is kept, the out-of-core block plan
- :mod:`.to_zarr`, :mod:`.zarr_tasks`, :mod:`.omezarr`, :mod:`.cluster` — out-of-core and
  distributed denoising into OME-Zarr on dask (the ``distributed`` extra)

Nothing here imports the training wing, Qt or napari.
"""
