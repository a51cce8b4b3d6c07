"""Text-to-video: text conditioning for MedSora and the Wan2.1 (MedGen) route.

    text.py        frozen T5/CLIP text encoder -> (context, mask), caption dropout, null, cache
    prompts.py     prompt files for batch generation (validated, named, seeded)
    wan.py         Wan2.1 through diffusers: loading, LoRA targets/export, flow-matching loss
    wan_data.py    captioned clips from manifest.jsonl or metadata.csv (video,prompt)
    wan_train.py   `medvid train-wan`: LoRA / full fine-tuning with accelerate
    generate.py    `medvid generate`: MedSora or Wan, one prompt or a resumable batch

Heavy imports (diffusers, transformers, peft) happen inside functions, so importing this package
is cheap.
"""
