"""Subcommands that use a trained model: sample, fit-prior, export, push, reconstruct, interpolate,
variations, encode, decode, anomaly, attribute. Each parses its arguments and calls one function."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vaegan.errors import InputError

CHECKPOINT_HELP = "run folder, checkpoint folder, export folder, or hf://OWNER/NAME[@REVISION] (a Hub model)"
IMAGES_HELP = "an image file, a folder of images, or split:NAME (a split of the model's dataset, e.g. split:val)"


def cmd_sample(args: argparse.Namespace) -> int:
    from vaegan.tools.generate import sample_to_files

    written, used = sample_to_files(args.checkpoint, args.n, args.out, seed=args.seed, individual=args.individual,
                                    use_ema=not args.no_ema, prior=args.prior)
    print(used)
    if args.individual:
        _report_folder(written, args.out, "samples")
    else:
        print(f"wrote {written.paths[0]}")
    return 0


def cmd_fit_prior(args: argparse.Namespace) -> int:
    from vaegan.tools.prior import fit_prior

    if args.components < 1 or (args.num_images is not None and args.num_images < args.components):
        raise InputError(f"--components must be >= 1 and --num-images >= --components, got {args.components}, "
                         f"{args.num_images}")
    path = fit_prior(args.checkpoint, args.components, args.num_images, args.seed, use_ema=not args.no_ema)
    flag = " --no-ema" if args.no_ema else ""
    print(f"wrote {path}; sample from it with: vaegan sample --checkpoint {args.checkpoint}{flag} --prior gmm --out OUT.png")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from vaegan.storage.export import export_model

    out = export_model(args.checkpoint, args.out, with_discriminator=args.with_discriminator, use_ema=not args.no_ema,
                       onnx=args.onnx, metrics=args.metrics)
    files = sorted(p.name for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    print(f"exported {args.checkpoint} to {out} ({', '.join(files)})")
    print(f"publish it with: vaegan push --export {out} --repo OWNER/NAME")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from vaegan.storage.hub import push_export

    url = push_export(args.export, args.repo, private=args.private, revision=args.revision,
                      commit_message=args.message)
    source = f"hf://{args.repo}" + (f"@{args.revision}" if args.revision else "")
    print(f"pushed {args.export} to {args.repo}" + (f" (revision {args.revision})" if args.revision else "")
          + f": {url}")
    print(f'load it with: vaegan.load_pretrained("{source}"), or --checkpoint {source} on any command')
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from vaegan.images import IMAGE_EXTENSIONS
    from vaegan.tools.generate import reconstruct_to_files

    written = reconstruct_to_files(args.checkpoint, args.images, args.out, limit=args.limit)
    if Path(args.out).suffix.lower() in IMAGE_EXTENSIONS:
        print(f"wrote {written.paths[0]}")
    else:
        _report_folder(written, args.out, "reconstructions")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from vaegan.tools.generate import interpolate_to_file

    out = interpolate_to_file(args.checkpoint, args.a, args.b, args.out, steps=args.steps, mode=args.mode,
                              originals=not args.no_originals)
    print(f"wrote {out}")
    return 0


def cmd_variations(args: argparse.Namespace) -> int:
    from vaegan.tools.generate import variations_to_file

    out = variations_to_file(args.checkpoint, args.image, args.out, n=args.n, scale=args.scale, seed=args.seed)
    print(f"wrote {out}")
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from vaegan.tools.latents import encode_to_file

    report = encode_to_file(args.checkpoint, args.images, args.out, fp16=args.fp16, limit=args.limit)
    print(f"wrote {args.out}: {report['images']} latents")
    print(_format_report(report))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from vaegan.images import Written
    from vaegan.tools.latents import decode_to_files

    result = decode_to_files(args.latents, args.checkpoint, args.out, originals=args.images)
    _report_folder(Written(result["paths"], result["replaced"]), args.out, "images")
    if "psnr" in result:
        print(f"PSNR {result['psnr']:.2f} dB, SSIM {result['ssim']:.4f} against {args.images}")
    return 0


def cmd_anomaly(args: argparse.Namespace) -> int:
    from vaegan.tools.anomaly import score_to_csv

    summary = score_to_csv(args.checkpoint, args.images, args.out, anomalies=args.anomalies, labels=args.labels,
                           calibrate=args.calibrate, percentile=args.percentile, threshold=args.threshold,
                           score=args.score, iw_samples=args.iw_samples, limit=args.limit, seed=args.seed)
    print(f"wrote {summary['images']} scores to {args.out}")
    if "threshold" in summary:
        print(f"threshold {summary['threshold']:.6g} on {summary['score']}: {summary['flagged']} flagged")
    for name, value in summary.get("auroc", {}).items():
        print(f"AUROC {name}: {value:.4f}")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    from vaegan.tools.attributes import attribute_to_file

    summary = attribute_to_file(args.checkpoint, args.attr, args.out, alphas=tuple(args.alpha), n=args.n,
                                images=args.images, attr_file=args.attr_file, celeba_root=args.celeba_root,
                                split=args.split, limit=args.limit, edit_images=args.edit,
                                vector_file=args.vector, save_vector_to=args.save_vector)
    print(json.dumps(summary))
    return 0


def _report_folder(written, out: str, what: str) -> None:
    """Say how many files a tool wrote into ``out`` (each a new file) and which existing ones it replaced."""
    from vaegan.images import describe_replaced

    print(f"wrote {len(written.paths)} {what} to {out}")
    note = describe_replaced(written, out)
    if note:
        print(note)


def _format_report(report: dict) -> str:
    lines = [f"bytes per image: latents {report['latent_bytes_per_image']:.0f}, "
             f"raw uint8 pixels {report['raw_pixel_bytes_per_image']} ({report['ratio_vs_raw_pixels']:.1f}x smaller)"]
    if "source_bytes_per_image" in report:
        lines.append(f"                 source files {report['source_bytes_per_image']:.0f} "
                     f"({report['ratio_vs_source_files']:.1f}x smaller)")
    lines.append(f"PSNR {report['psnr']:.2f} dB, SSIM {report['ssim']:.4f} against the originals at model resolution")
    return "\n".join(lines)


def register(sub) -> None:
    """Add this group's subcommands to the vaegan parser."""
    _register_generation(sub)
    _register_distribution(sub)
    _register_compression(sub)
    _register_analysis(sub)


def _register_generation(sub) -> None:
    p = sub.add_parser("sample", help="draw prior samples from a trained model")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", required=True, help="grid image path (.png, .jpg, .jpeg, .webp or .bmp), "
                                                "or a folder with --individual")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--individual", action="store_true", help="one PNG per sample in the --out folder")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights even if an EMA exists")
    p.add_argument("--prior", choices=("auto", "normal", "gmm"), default="auto",
                   help="gmm: latents from the Gaussian mixture fitted to the training codes (training fits one at "
                        "its end; 'vaegan fit-prior' for another step or --no-ema); normal: from N(0, I); auto "
                        "(default): the mixture when there is one for these weights, else N(0, I)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("fit-prior", help="fit a Gaussian mixture to the training images' codes, for vaegan sample "
                                        "(training fits one at its end; this one for another step or --no-ema)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--components", type=int, default=10)
    p.add_argument("--num-images", type=int, help="use the first N training images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true", help="fit it for the raw weights (for vaegan sample --no-ema)")
    p.set_defaults(func=cmd_fit_prior)

    p = sub.add_parser("reconstruct", help="reconstruct images through the posterior mean")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--images", required=True, help=IMAGES_HELP)
    p.add_argument("--out", required=True, help="an image file (.png, .jpg, ...): a grid of original/reconstruction "
                                                "pairs; else a folder of PNGs named like the inputs")
    p.add_argument("--limit", type=int, help="use the first N images only")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("interpolate", help="a strip of decodings between two images' latents")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--a", required=True, help="first image file")
    p.add_argument("--b", required=True, help="last image file")
    p.add_argument("--steps", type=int, default=8, help="decodings from a's reconstruction to b's")
    p.add_argument("--mode", choices=("linear", "slerp"), default="linear")
    p.add_argument("--out", required=True, help="strip PNG")
    p.add_argument("--no-originals", action="store_true", help="leave the input images off the strip's ends")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("variations", help="decodings of posterior samples around one image")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--image", required=True, help="image file")
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--scale", type=float, default=1.0, help="multiplier on the posterior std")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="grid PNG: image, reconstruction, variations")
    p.set_defaults(func=cmd_variations)


def _register_distribution(sub) -> None:
    p = sub.add_parser("export", help="write model.safetensors + config.json for use without training code")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="export folder")
    p.add_argument("--with-discriminator", action="store_true", help="also export the discriminator")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights even if an EMA exists")
    p.add_argument("--onnx", action="store_true", help="also write encoder.onnx, decoder.onnx and prior_decoder.onnx")
    p.add_argument("--metrics", metavar="FILE", help="metrics.json of 'vaegan fid --out' or 'vaegan compare' for the "
                                                      "model card (default: the run folder's metrics.json, if any)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("push", help="upload an export folder to a Hugging Face Hub model repo",
                       description="Upload an export folder (model card included) to the Hub model repo "
                                   "OWNER/NAME, created if needed. Needs huggingface_hub (pip install "
                                   "'vaegan[hub]') and a login (hf auth login, or HF_TOKEN).")
    p.add_argument("--export", required=True, metavar="DIR", help="export folder written by 'vaegan export'")
    p.add_argument("--repo", required=True, metavar="OWNER/NAME", help="Hub model repo")
    p.add_argument("--private", action="store_true", help="create the repo private (if it does not exist yet)")
    p.add_argument("--revision", metavar="BRANCH", help="branch to push to (created if missing; default: main)")
    p.add_argument("--message", help="commit message")
    p.set_defaults(func=cmd_push)


def _register_compression(sub) -> None:
    p = sub.add_parser("encode", help="compress images to posterior-mean latents (safetensors)")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--images", required=True, help=IMAGES_HELP)
    p.add_argument("--out", required=True, help="latents .safetensors file")
    p.add_argument("--fp16", action="store_true", help="store the latents as float16 (half the bytes)")
    p.add_argument("--limit", type=int, help="use the first N images only")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("decode", help="decode a latents file to images")
    p.add_argument("latents", help="latents .safetensors file written by 'vaegan encode'")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="folder for the decoded PNGs")
    p.add_argument("--images", help="the original images, to report PSNR/SSIM against")
    p.set_defaults(func=cmd_decode)


def _register_analysis(sub) -> None:
    p = sub.add_parser("anomaly", help="per-image anomaly scores (reconstruction errors, -ELBO), AUROC, threshold")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--images", required=True, help=IMAGES_HELP)
    p.add_argument("--out", required=True, help="scores CSV")
    p.add_argument("--anomalies", help="images known to be anomalous (--images then count as normal); AUROC")
    p.add_argument("--labels", help="CSV with file,label columns (1 = anomalous) for --images; AUROC")
    p.add_argument("--calibrate", help="normal images (" + IMAGES_HELP + ") to set the threshold on")
    p.add_argument("--percentile", type=float, default=95.0, help="percentile of --calibrate scores as threshold")
    p.add_argument("--threshold", type=float, help="flag scores above this (instead of --calibrate)")
    p.add_argument("--score", default="neg_elbo", choices=("pixel_error", "feature_error", "neg_elbo", "neg_iw_elbo"),
                   help="the score the threshold applies to")
    p.add_argument("--iw-samples", type=int, default=0, help="K > 0 adds the importance-weighted bound neg_iw_elbo")
    p.add_argument("--limit", type=int, help="use the first N images of each source only")
    p.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
    p.set_defaults(func=cmd_anomaly)

    p = sub.add_parser("attribute", help="latent attribute vector (mean positive - mean negative) and edits")
    p.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    p.add_argument("--attr", help="attribute name, e.g. Smiling (CelebA) or smiling (built-in faces)")
    p.add_argument("--images", help="a folder (with --attr-file) or split:NAME; default: the model's own dataset")
    p.add_argument("--attr-file", help="list_attr_celeba.txt-format labels for the --images folder")
    p.add_argument("--celeba-root", help="a CelebA folder (img_align_celeba/, list_attr_celeba.txt, ...)")
    p.add_argument("--split", default="train", help="dataset split the vector is computed on")
    p.add_argument("--limit", type=int, default=2000, help="labelled images to average over")
    p.add_argument("--alpha", type=float, nargs="+", default=[1.5], help="edit strengths, one grid row each")
    p.add_argument("--n", type=int, default=8, help="images in the edit grid")
    p.add_argument("--edit", help="images to edit (" + IMAGES_HELP + "); default: labelled images lacking it")
    p.add_argument("--vector", help="use a saved vector instead of computing one")
    p.add_argument("--save-vector", help="write the vector to this .safetensors file")
    p.add_argument("--out", help="edit grid PNG: originals, reconstructions, one row per alpha")
    p.set_defaults(func=cmd_attribute)
