"""The plugin's name and its widgets' display names, as napari.yaml declares them."""

PLUGIN = "napari-b2u"
TRAIN_WIDGET = "Blind2Unblind: Train"
DENOISE_WIDGET = "Blind2Unblind: Denoise"
#: model files (the core's ``Denoiser.save``)
MODEL_SUFFIX = ".b2u"
