"""The words of a bioimage.io package: citations, its description and its README.

Plain strings and dicts only (no torch, no bioimageio): :mod:`napari_b2u.zoo.export` turns them into
the package. Citations carry the arXiv address of each paper (verified); DOIs are left out where
they could not be checked.
"""

from __future__ import annotations

import math

PROJECT_URL = "https://github.com/napari-b2u/napari-b2u"

#: papers, by key: (citation text, url)
PAPERS = {
    "b2u": ("Wang, Z., Liu, J., Li, G., Han, H. Blind2Unblind: Self-Supervised Image Denoising "
            "with Visible Blind Spots. CVPR 2022", "https://arxiv.org/abs/2203.06967"),
    "b2s": ("Wang, Z., Liu, J., Zhai, H., Han, H. Blind2Sound: Self-Supervised Image Denoising "
            "without Residual Noise. arXiv:2303.05183", "https://arxiv.org/abs/2303.05183"),
    "dbsn": ("Wu, X., Liu, M., Cao, Y., Ren, D., Zuo, W. Unpaired Learning of Deep Image "
             "Denoising (D-BSN). ECCV 2020", "https://arxiv.org/abs/2008.13711"),
    "n2v": ("Krull, A., Buchholz, T.-O., Jug, F. Noise2Void - Learning Denoising from Single "
            "Noisy Images. CVPR 2019", "https://arxiv.org/abs/1811.10980"),
    "nbr2nbr": ("Huang, T., Li, S., Jia, X., Lu, H., Liu, J. Neighbor2Neighbor: Self-Supervised "
                "Denoising from Single Noisy Images. CVPR 2021",
                "https://arxiv.org/abs/2101.02824"),
    "software": ("napari-b2u: self-supervised denoising of fluorescence microscopy in napari "
                 "(the software that trained and exported this model)", PROJECT_URL),
}

#: the method's own paper first; Blind2Unblind is cited by every package
METHOD_PAPERS = {"b2u": ("b2u",), "b2s": ("b2s", "b2u"), "dbsn": ("dbsn", "b2u"),
                 "n2v": ("n2v", "b2u"), "nbr2nbr": ("nbr2nbr", "b2u")}


def citations(method: str) -> list[tuple[str, str]]:
    keys = METHOD_PAPERS.get(method, ("b2u",)) + ("software",)
    return [PAPERS[k] for k in keys]


def urls() -> list[str]:
    """Every address a package names (the export vouches for them, so that building and
    checking a package needs no network)."""
    return sorted({url for _, url in PAPERS.values()})


def _norm_line(norm: dict) -> str:
    pairs = ", ".join(f"channel {c}: (raw − {o:.6g}) / {s:.6g}"
                      for c, (o, s) in enumerate(zip(norm["offset"], norm["scale"])))
    return pairs


def output_note(output: str, default: str, default_single: bool) -> str:
    """What to say about the exported output when it is not the method's default."""
    if output == default:
        return ""
    if default_single:
        return (f"It holds the '{output}' output, chosen at export; the method's default is "
                f"'{default}' (napari-b2u opens the package with every output).")
    return (f"The method's default output '{default}' needs more than one network pass and is "
            "not in the package (napari-b2u opens the package with every output).")


def description(title: str, output: str, output_text: str, note: str) -> str:
    """The package's one-paragraph description (bioimage.io shows it under the name)."""
    text = (f"Self-supervised {title} denoiser trained with napari-b2u on the user's own "
            f"noisy stack (no clean images). The package holds the '{output}' output "
            f"({output_text.split(':')[0].strip()}), one network pass.")
    return (text + (" " + note if note else ""))[:1000]


def readme(*, name: str, title: str, method: str, output: str, output_text: str,
           note: str, outputs: dict, norm: dict, info: dict,
           halo: int, min_size: int, step: int, channels: int, pixel_size: dict,
           package_version: str, tolerance: float) -> str:
    """The package's documentation (README.md), with the '## Validation' section the spec
    asks for."""
    steps = info.get("steps", "?")
    hist = [h for h in info.get("history", []) if isinstance(h, dict)]
    val = [h.get("val_error") for h in hist if isinstance(h.get("val_error"), (int, float))]
    best = min(val) if val else None
    size = (", ".join(f"{a} {v:g} µm" for a, v in sorted(pixel_size.items()))
            if pixel_size else "not recorded")
    lines = [
        f"# {name}",
        "",
        description(title, output, output_text, note),
        "",
        "## The model",
        "",
        f"- Method: **{title}** (`{method}`); exported output: **{output}** — {output_text}.",
        "- Outputs napari-b2u offers for this model: "
        + "; ".join(f"`{k}` ({v})" for k, v in outputs.items()) + ".",
    ]
    if note:
        lines.append(f"- {note}")
    lines += [
        f"- Training: {steps} steps in {info.get('seconds', '?')} s on "
        f"{info.get('device', '?')}; kept: {info.get('chosen', '?')}; hold-out: "
        f"{info.get('split', '?')}.",
        f"- Channels: {channels}, denoised jointly by one network. Pixel size: {size}.",
        f"- Input: raw intensities (float32; any integer image converts exactly), axes "
        f"batch, channel, y, x; y and x of {min_size} + n × {step} pixels"
        + (f" (the U-Net halves the image {int(math.log2(step))} times)" if step > 1 else "")
        + f". Output: the denoised image in the same units; crop {halo} pixels from each side "
        "of a tile (halo) when tiling.",
        f"- Normalization (fitted on the training stack, mode '{norm.get('mode')}', source "
        f"type {norm.get('source_dtype')}): {_norm_line(norm)}; the preprocessing applies it "
        "(scale_linear per channel) and the postprocessing maps the output back to raw units.",
        "",
        "## Use",
        "",
        "- napari-b2u: `napari_b2u.api.load('this.zip')` or *Load…* in the Denoise panel (all "
        "outputs, tiling, test-time ensembling).",
        "- bioimageio.core: `bioimageio predict` / `bioimageio.core.predict`; Fiji with "
        "deepImageJ and other consumers use the TorchScript weights.",
        "- Use it on images of the same microscope, settings and kind as the training stack: "
        "the normalization and the noise it learned are those of that stack.",
        "",
        "## Validation",
        "",
        "The model was validated without clean images: part of the training stack was held out "
        "and the self-supervised blind-spot error (the error of predicting each held-out pixel "
        "without seeing it, which equals the true error plus the noise variance for "
        "pixel-independent noise) chose the weights that were kept"
        + (f"; its lowest value was {best:.4g} (normalized units)" if best is not None else "")
        + ". To validate on your data, denoise unseen frames and compare with a clean "
        "reference (averaged frames) where one exists, or look at the residual (input − "
        "output): it should show noise only, no structure.",
        "",
        f"The test input is a crop of the training data; the test output is napari-b2u's own "
        f"denoising of it (reproduced within {tolerance:.3g} raw units + 0.1 %).",
        "",
        "## Limitations",
        "",
        "- Blind-spot methods assume noise that is independent between pixels (raw detector "
        "data); noise that was filtered, resampled or compressed is partly kept.",
        "",
        "## Cite",
        "",
    ]
    lines += [f"- {text}. {url}" for text, url in citations(method)]
    lines += ["", f"Exported by napari-b2u {package_version}.", ""]
    return "\n".join(lines)
