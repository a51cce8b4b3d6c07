"""Vision-language models as captioner (``medvid caption``) and judge (``medvid judge``)."""
