"""Evaluation subcommands: ``vaegan fid``, ``compare`` and ``summarize`` (logic in vaegan.evaluation.evaluate / report).

Missing Inception weights raise ``MissingWeightsError``, a VaeganError: ``vaegan.cli.main`` prints its
instructions and exits 2, like every other user-facing error.
"""
from __future__ import annotations

import argparse
import json


def _protocol(args: argparse.Namespace):
    from vaegan.evaluation.evaluate import Protocol

    return Protocol(num_samples=args.num_samples, num_reference=args.num_reference, seed=args.seed,
                    batch_size=args.batch_size, device=args.device, prior=args.prior)


def cmd_fid(args: argparse.Namespace) -> int:
    from vaegan.evaluation.evaluate import fid
    from vaegan.files import write_text_atomic
    from vaegan.images import check_output_file

    if args.out:
        check_output_file(args.out)
    result = fid(args.checkpoint, _protocol(args), recon=args.recon, ref=args.ref, ref_celeba=args.ref_celeba,
                 ref_split=args.ref_split, extractor=args.extractor, inception_weights=args.inception_weights)
    p = result["protocol"]
    latents = "the fitted mixture" if p["prior"] == "gmm" else "N(0, I)"
    print(f"{p['num_samples']} samples (latents from {latents}, seed {p['seed']}) vs {p['num_reference']} images of {p['reference']}; "
          f"features: {p['extractor']}")
    for what in ("samples", "recon"):
        if what in result:
            m = result[what]
            print(f"{what:>8}: FID {m['fid']:.3f}  KID {m['kid_mean']:.5f} ± {m['kid_std']:.5f}  "
                  f"precision {m['precision']:.3f}  recall {m['recall']:.3f}")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from vaegan.evaluation.evaluate import compare_runs
    from vaegan.images import check_output_folder

    check_output_folder(args.out)
    comparison = compare_runs(args.runs, args.names, _protocol(args), ref=args.ref, ref_celeba=args.ref_celeba,
                              ref_split=args.ref_split, extractor=args.extractor,
                              inception_weights=args.inception_weights, with_features=not args.no_fid)
    _write_report(comparison, args.out)
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from vaegan.evaluation.evaluate import summarize_runs
    from vaegan.images import check_output_folder

    if args.out:
        check_output_folder(args.out)
    comparison = summarize_runs(args.runs, args.names, num_images=args.num_images, seed=args.seed, device=args.device,
                                ref=args.ref, ref_celeba=args.ref_celeba, ref_split=args.ref_split, prior=args.prior)
    if args.out:
        _write_report(comparison, args.out)
    return 0


def _write_report(comparison, out: str) -> None:
    from vaegan.evaluation.report import write_report

    paths = write_report(comparison, out)
    print(f"wrote {paths['markdown']} (and report.html, metrics.json, samples.png, recon.png in {out})")


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="run, checkpoint or export folders, or hf://OWNER/NAME[@REVISION]")
    p.add_argument("--names", nargs="+", metavar="NAME", help="one column name per run (default: folder names)")


def _add_sampling_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples' latents")
    p.add_argument("--prior", choices=("normal", "gmm"), default="normal",
                   help="latents from N(0, I) (default), or from each model's fitted Gaussian mixture (what "
                        "vaegan sample draws by default; training fits one at its end, 'vaegan fit-prior' another)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps ...")


def _add_reference_arguments(p: argparse.ArgumentParser) -> None:
    ref = p.add_mutually_exclusive_group()
    ref.add_argument("--ref", metavar="DIR", help="reference: any image folder (cropped/resized to the model's size)")
    ref.add_argument("--ref-celeba", metavar="ROOT", help="reference: CelebA under ROOT (holding img_align_celeba/)")
    p.add_argument("--ref-split", default="test", choices=("train", "val", "test", "all"),
                   help="split of CelebA or the run's own dataset used as reference (default: test)")


def _add_evaluation_arguments(p: argparse.ArgumentParser, num_samples: int) -> None:
    """Protocol, reference and feature-network options shared by fid and compare."""
    p.add_argument("--num-samples", type=int, default=num_samples, help="prior samples per model")
    p.add_argument("--num-reference", type=int, default=None,
                   help="reference images, a fixed random subset (default: as many as --num-samples)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    _add_reference_arguments(p)
    p.add_argument("--inception-weights", metavar="PATH",
                   help="local weights-inception-2015-12-05-6726825d.pth (default: torch hub's cache, else download); "
                        "its SHA-256 is checked before it is loaded")
    p.add_argument("--extractor", metavar="NAME", default=None,
                   help="feature network (default: inception-v3-compat); 'vaegan-random-conv' is a weights-free "
                        "test network whose FID compares with nothing")


def register(sub) -> None:
    """Add this group's subcommands to the vaegan parser."""
    p = sub.add_parser("fid", help="FID, KID and precision/recall of a model against a reference set",
                       description="FID/KID/precision-recall (Inception-v3 features via torch-fidelity) of "
                                   "prior samples, and optionally reconstructions, against a reference: by "
                                   "default the test split of the run's own dataset.")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, checkpoint folder, export folder or hf://OWNER/NAME[@REVISION]")
    p.add_argument("--recon", action="store_true", help="also score reconstructions of the reference images")
    p.add_argument("--out", metavar="FILE", help="write the metrics as JSON here")
    _add_sampling_arguments(p)
    _add_evaluation_arguments(p, num_samples=10000)
    p.set_defaults(func=cmd_fid)

    p = sub.add_parser("compare", help="evaluate runs under one protocol; write a report with grids",
                       description="Evaluate runs (e.g. the plain VAE and the VAE-GAN) with the same seed, sample "
                                   "count and reference subset. Always: SWD, sharpness, reconstruction "
                                   "PSNR/SSIM; FID/KID/PR when Inception weights are available.")
    _add_run_arguments(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for report.md, metrics.json and grids")
    p.add_argument("--no-fid", action="store_true", help="skip FID/KID/PR (no Inception network)")
    _add_sampling_arguments(p)
    _add_evaluation_arguments(p, num_samples=5000)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("summarize", help="a quick table of download-free metrics for runs (no FID)",
                       description="One line per run: sharpness of samples relative to real images, SWD at every "
                                   "pyramid level and averaged, reconstruction PSNR; same protocol as compare, "
                                   "fewer images, no Inception network.")
    _add_run_arguments(p)
    p.add_argument("--num-images", type=int, default=256,
                   help="prior samples and reference images per run (SWD reads high and noisy with few: "
                        "compare runs with 2000, as the quickstart does)")
    p.add_argument("--out", metavar="DIR", help="also write report.md, metrics.json and grids here")
    _add_sampling_arguments(p)
    _add_reference_arguments(p)
    p.set_defaults(func=cmd_summarize)
