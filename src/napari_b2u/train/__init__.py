"""The training wing: one engine for every method.

- :mod:`.trainer` — :class:`~.trainer.Trainer`, the loop (step, record, validate, autosave,
  preview) and stopping; :mod:`.steps` one optimization step (precision, compile, out of
  memory, NaN rollback); :mod:`.state` what the run has done
- :mod:`.plan` — the hold-out and the run plan, known before the data is read
- :mod:`.data` — the training data, in memory or (:mod:`.lazydata`) read on demand: one path
- :mod:`.crops` — random training crops on the device, fixed crops for validation and the risk
- :mod:`.keep` — which weights are kept; :mod:`.floor` the classical floor; :mod:`.sure`
  Stein's unbiased risk estimate both use
- :mod:`.checkpoint` — autosave and resume; :mod:`.events` what training reports;
  :mod:`.averaging` the weight average; :mod:`.warm_start` starting weights;
  :mod:`.runtime` stop hooks and stand-ins

It uses the denoising wing (the model it returns is a
:class:`~napari_b2u.denoise.denoiser.Denoiser`); nothing imports it back but the doors.
"""
