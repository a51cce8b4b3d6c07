"""Raw footage -> clean clips: scene cuts, quality filters, duplicates (``medvid curate``)."""
