"""The plugin's name and its widgets' display names, as napari.yaml declares them. napari adds
the plugin's display name ("Blind2Unblind") in its menus — Plugins ▸ Blind2Unblind ▸ Train
denoiser (Blind2Unblind) — so the widget names do not repeat it."""

PLUGIN = "napari-b2u"
#: the plugin's display name (napari.yaml): napari's menus title its docks "<widget> (<this>)"
PLUGIN_TITLE = "Blind2Unblind"
TRAIN_WIDGET = "Train denoiser"
DENOISE_WIDGET = "Denoise"
#: model files (the core's ``Denoiser.save``)
MODEL_SUFFIX = ".b2u"
