"""The plugin's settings in napari's Preferences (napari >= 0.9 builds them from the manifest's
``contributions.configurations``): the device the panels start with and the number of CPU
threads torch computes with. Older napari has no plugin settings: the built-in defaults
apply. Qt-free."""

from __future__ import annotations

import logging

from ._names import PLUGIN

log = logging.getLogger(__name__.split(".")[0])  # the package's logger

#: what applies where napari keeps no plugin settings (napari.yaml declares the same)
DEFAULTS = {"device": "auto", "cpu_threads": 0}


def plugin_defaults() -> dict:
    """{'device': 'auto' | 'cpu' | 'cuda' | 'mps', 'cpu_threads': int (0: torch's own)} from
    napari's plugin settings, else :data:`DEFAULTS`."""
    out = dict(DEFAULTS)
    try:
        from napari.settings import get_plugin_settings
    except ImportError:  # napari < 0.9
        return out
    try:
        prefs = get_plugin_settings(PLUGIN).defaults
        out.update(device=str(prefs.device), cpu_threads=int(prefs.cpu_threads))
    except Exception:  # noqa: BLE001 - unreadable settings must not stop a panel
        log.debug("napari's settings of %s could not be read", PLUGIN, exc_info=True)
    return out


def use_cpu_threads() -> None:
    """Give torch the CPU threads the settings ask for (0: leave torch's choice)."""
    n = plugin_defaults()["cpu_threads"]
    if n > 0:
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
