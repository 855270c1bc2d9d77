"""The napari plugin layer: Train and Denoise dock widgets, sample data, a model reader.

Only this package imports Qt or napari; the core stays GUI-free. Submodules are imported lazily,
so the hooks that need no Qt stay cheap.

Modules, each importing only those listed before it:

- ``_names``: the plugin's and widgets' names; ``_session``: what the widgets of a viewer share;
  ``_prefs``: the plugin's settings in napari's Preferences;
- ``_text``: wording, notifications, the status line; ``_layers``: layers <-> the core's stacks
  (Qt-free); ``_forms``: inputs made from typed settings; ``_scroll``: the panels' scrolled
  content; ``_panel``: the panels' base and workers; ``_pickers``: layer and device pickers;
  ``_model_bar``; ``_plot``; ``_previews``;
- ``_train_job``: the training thread; ``_train_form``: the Train settings; ``_train``;
- ``_denoise_job``: the denoising thread; ``_denoise``; ``_hooks``: sample data, the reader.
"""

from ._names import DENOISE_WIDGET, PLUGIN, TRAIN_WIDGET

__all__ = ["TrainWidget", "DenoiseWidget", "PLUGIN", "TRAIN_WIDGET", "DENOISE_WIDGET"]


def __getattr__(name):
    if name == "TrainWidget":
        from ._train import TrainWidget

        return TrainWidget
    if name == "DenoiseWidget":
        from ._denoise import DenoiseWidget

        return DenoiseWidget
    raise AttributeError(name)
