"""medvid: medical video generation.

The package is laid out in the order a clip travels:

    data/       raw videos, DICOM, NIfTI, frame folders -> manifest -> clip datasets
    latents/    video VAEs (CogVideoX, frequency-compensated) and cached latents
    flow/       optical flow, flow images, representation features, alignment loss
    models/     backbones: MedSora (Mamba), STDiT baseline, Mamba-2 mixer
    diffusion/  noise schedule, losses, DDIM / DDPM / DPM-Solver++ samplers
    training/   the training loop, checkpoints, EMA, distributed runs
    sampling/   checkpoint -> videos (mp4, gif, contact sheet, npz)
    metrics/    FVD, CD-FVD, FID, IS, frame consistency, VBench-style, offline distances
    report/     the self-contained HTML report
    t2v/        text conditioning and Wan2.1 fine-tuning / generation (MedGen route)
    curation/   raw footage -> clean clips (scene cuts, filters)
    vlm/        vision-language models as captioner and judge
"""

__version__ = "0.1.0"
