"""Write a ``vaegan.evaluation.evaluate.Comparison`` out: report.md, report.html, metrics.json and grids.

Files in the output folder:

- ``samples.png``: each run's first 64 prior samples, runs side by side (same latents when the
  runs share a latent size);
- ``recon.png``: the first 64 held-out reference images, then each run's reconstructions of them;
- ``metrics.json``: {"protocol": ..., "feature_note": ..., "runs": {name: {"path", "kind",
  "seconds", "metrics": {...}}}};
- ``report.md`` / ``report.html``: the metrics table and the grids.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image, ImageDraw

from vaegan.images import make_grid, pil_to_uint8, save_image
from vaegan.files import write_text_atomic
from vaegan.metrics.swd import pyramid_resolutions

if TYPE_CHECKING:
    from vaegan.evaluation.evaluate import Comparison

GAP_PX = 8  # white columns between panels
LABEL_PX = 16  # white rows above each panel, holding its name


def _number(fmt: str):
    return lambda m, key: fmt.format(m[key]) if key in m else "n/a"


def _kid(m: dict, key: str) -> str:
    if "kid_mean" not in m:
        return "n/a"
    return f"{1e3 * m['kid_mean']:.2f} ± {1e3 * m['kid_std']:.2f}"


def metric_rows(comparison: Comparison) -> list[tuple[str, str, object]]:
    """(label, key, formatter) of the table's rows; SWD gets one row per pyramid level."""
    levels = sorted({int(k.rsplit("_", 1)[1]) for run in comparison.runs for k in run.metrics
                     if k.startswith("SWDx1e3_") and not k.endswith("_avg")}, reverse=True)
    rows = [("FID ↓", "fid", _number("{:.2f}")), ("KID ×10³ ↓", "kid_mean", _kid),
            ("precision ↑", "precision", _number("{:.3f}")), ("recall ↑", "recall", _number("{:.3f}"))]
    rows += [(f"SWD ×10³, {res} px ↓", f"SWDx1e3_{res}", _number("{:.2f}")) for res in levels]
    rows += [("SWD ×10³, average ↓", "SWDx1e3_avg", _number("{:.2f}")),
             ("pixel FD, 8x8 ↓", "pixel_fd", _number("{:.3f}")),
             ("sharpness of samples (HF energy / real; 1 = real)", "hf_ratio", _number("{:.3f}")),
             ("grid peaks of samples (stride-2 artefacts / real; 1 = real)", "grid_peak_ratio", _number("{:.3f}")),
             ("sharpness of reconstructions (HF energy / real)", "recon_hf_ratio", _number("{:.3f}")),
             ("grid peaks of reconstructions (/ real)", "recon_grid_peak_ratio", _number("{:.3f}")),
             ("reconstruction PSNR (dB) ↑", "psnr", _number("{:.2f}")),
             ("reconstruction SSIM ↑", "ssim", _number("{:.3f}"))]
    return rows


def _table(comparison: Comparison) -> tuple[list[str], list[list[str]]]:
    header = ["metric", *(run.name for run in comparison.runs)]
    body = [[label, *(fmt(run.metrics, key) for run in comparison.runs)]
            for label, key, fmt in metric_rows(comparison)]
    return header, body


LATENTS = {"normal": "N(0, I)", "gmm": "the run's Gaussian mixture fitted to its training codes"}


def _protocol_lines(comparison: Comparison) -> list[str]:
    p, record = comparison.protocol, comparison.protocol_record()
    lines = [
        f"{p.num_samples} prior samples per run (latents from {LATENTS[p.prior]}, seed {p.seed}).",
        f"Reference: {record['reference']}; {record['num_reference']} images at {record['resolution']} px "
        f"(the same subset for every run, sha256 {record['reference_sha256'][:16]}…), "
        f"also the held-out images each run reconstructs (from posterior means).",
    ]
    if comparison.extractor:
        lines.append(f"FID/KID/precision/recall features: {comparison.extractor}.")
    else:
        lines.append("FID/KID/precision/recall: not computed (see the note below the table); "
                     "the other metrics need no download.")
    return lines


def _label(grid: torch.Tensor, text: str) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, LABEL_PX + H, W) with ``text`` in a white strip on top."""
    strip = Image.new("RGB", (grid.shape[2], LABEL_PX), "white")
    ImageDraw.Draw(strip).text((2, 2), text, fill="black")
    return torch.cat([pil_to_uint8(strip), grid], dim=1)


def side_by_side(panels: list[torch.Tensor], labels: list[str], nrow: int = 8) -> torch.Tensor:
    """uint8 image sets (N, 3, R, R), one labelled grid each, joined left to right: uint8 (3, H, W)."""
    grids = [_label(make_grid(p, nrow=nrow), text) for p, text in zip(panels, labels)]
    gap = torch.full((3, grids[0].shape[1], GAP_PX), 255, dtype=torch.uint8)
    return torch.cat([part for g in grids for part in (g, gap)][:-1], dim=2)


def write_grids(comparison: Comparison, out_dir: Path) -> dict[str, Path]:
    """samples.png (runs left to right) and recon.png (real, then runs) in ``out_dir``."""
    runs = comparison.runs
    real = comparison.reference.images[: len(runs[0].reconstructions)]
    paths = {"samples": out_dir / "samples.png", "recon": out_dir / "recon.png"}
    names = [run.name for run in runs]
    save_image(side_by_side([run.samples for run in runs], names), paths["samples"])
    save_image(side_by_side([real, *(run.reconstructions for run in runs)], ["real", *names]), paths["recon"])
    return paths


def metrics_record(comparison: Comparison) -> dict:
    """What metrics.json holds."""
    return {
        "protocol": comparison.protocol_record(),
        "feature_note": comparison.feature_note,
        "runs": {run.name: {"path": run.path, "kind": run.kind, "seconds": round(run.seconds, 2),
                            "metrics": run.metrics} for run in comparison.runs},
    }


def markdown(comparison: Comparison, grids: dict[str, Path]) -> str:
    header, body = _table(comparison)
    names = ", ".join(run.name for run in comparison.runs)
    lines = ["# Evaluation: " + " vs ".join(run.name for run in comparison.runs), ""]
    lines += [f"- {line}" for line in _protocol_lines(comparison)]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    if comparison.feature_note:
        lines += ["", "FID/KID/precision/recall were not computed:", "", "```", comparison.feature_note, "```"]
    lines += ["", "Runs: " + ", ".join(f"{run.name} = `{run.path}` ({run.kind})" for run in comparison.runs), ""]
    lines += ["## Prior samples", "", f"Left to right: {names}.", "",
              f"![prior samples]({grids['samples'].name})", ""]
    lines += ["## Reconstructions of held-out images", "", f"Left to right: real, {names}.", "",
              f"![reconstructions]({grids['recon'].name})", ""]
    return "\n".join(lines)


def to_html(comparison: Comparison, grids: dict[str, Path]) -> str:
    e = html.escape
    header, body = _table(comparison)
    names = e(", ".join(run.name for run in comparison.runs))
    table = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>\n" for row in body)
    parts = [
        "<!doctype html>\n<meta charset='utf-8'>\n<title>vaegan evaluation</title>",
        "<style>body{font-family:sans-serif} td,th{padding:2px 10px;text-align:right} "
        "td:first-child{text-align:left} img{image-rendering:pixelated;max-width:100%}</style>",
        "<h1>Evaluation: " + e(" vs ".join(run.name for run in comparison.runs)) + "</h1>",
        "<ul>" + "".join(f"<li>{e(line)}</li>" for line in _protocol_lines(comparison)) + "</ul>",
        "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + f"</tr>\n{table}</table>",
    ]
    if comparison.feature_note:
        parts.append(f"<p>FID/KID/precision/recall were not computed:</p><pre>{e(comparison.feature_note)}</pre>")
    parts += [f"<h2>Prior samples</h2><p>Left to right: {names}.</p><img src='{grids['samples'].name}'>",
              f"<h2>Reconstructions of held-out images</h2><p>Left to right: real, {names}.</p>"
              f"<img src='{grids['recon'].name}'>"]
    return "\n".join(parts) + "\n"


def write_report(comparison: Comparison, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.html, metrics.json, samples.png and recon.png into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_grids(comparison, out_dir)
    paths.update(metrics=out_dir / "metrics.json", markdown=out_dir / "report.md", html=out_dir / "report.html")
    write_text_atomic(paths["metrics"], json.dumps(metrics_record(comparison), indent=2) + "\n")
    write_text_atomic(paths["markdown"], markdown(comparison, paths))
    write_text_atomic(paths["html"], to_html(comparison, paths))
    return paths


def summary_table(comparison: Comparison) -> str:
    """One line per run: sample sharpness and grid-peak ratios, SWD at every pyramid level (finest
    first) and averaged, reconstruction PSNR and grid-peak ratio."""
    levels = pyramid_resolutions(comparison.reference.images.shape[-1])  # the levels compute_swd reports
    cols = ["sharpness", "grid peaks", *(f"SWDx1e3@{level}" for level in levels), "SWDx1e3 avg", "PSNR dB",
            "recon peaks"]
    keys = ["hf_ratio", "grid_peak_ratio", *(f"SWDx1e3_{level}" for level in levels), "SWDx1e3_avg", "psnr",
            "recon_grid_peak_ratio"]
    width = max(len("run"), *(len(run.name) for run in comparison.runs))
    lines = [f"{'run':<{width}}  " + "  ".join(f"{c:>12}" for c in cols)]
    for run in comparison.runs:
        lines.append(f"{run.name:<{width}}  " + "  ".join(f"{run.metrics[k]:>12.3f}" for k in keys))
    lines.append(f"({len(comparison.reference.images)} images vs {comparison.reference.description}; "
                 f"sharpness: high-frequency energy / real's, 1 = as sharp as real, and speckle counts as sharp; "
                 f"grid peaks: energy at the stride-2 upsampling frequencies / real's, 1 = as real, above 1 = "
                 f"checkerboard; lower SWD is better)")
    return "\n".join(lines)
