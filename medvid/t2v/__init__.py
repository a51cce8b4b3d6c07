"""Text-to-video: text conditioning for MedSora and the Wan2.1 (MedGen) route.

    text.py        frozen T5/CLIP text encoder -> (context, mask), caption dropout, null, cache
    prompts.py     prompt files for batch generation (validated, named, seeded)
    wan.py         Wan2.1 through diffusers: loading, LoRA targets, I2V conditioning, flow-matching loss
    wan_original.py  the original Wan2.1 release layout (single-file / sharded DiT, Wan2.1_VAE, UMT5 files)
    wan_lora.py    LoRA layouts (diffusers, original Wan / ComfyUI, musubi) and `medvid export-lora`
    buckets.py     (height, width, frames) buckets and the within-bucket batch stream
    wan_data.py    captioned clips from manifest.jsonl or metadata.csv (video,prompt), bucketed
    wan_cache.py   `medvid wan-cache`: VAE latents + UMT5 embeddings, sharded and resumable
    wan_validate.py  validation videos during training (mp4 + TensorBoard)
    wan_train.py   `medvid train-wan`: LoRA / full fine-tuning with accelerate
    generate.py    `medvid generate`: MedSora or Wan (T2V, I2V, still images), one prompt or a resumable batch

Heavy imports (diffusers, transformers, peft) happen inside functions, so importing this package
is cheap.
"""
