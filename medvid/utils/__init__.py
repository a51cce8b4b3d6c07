"""Small shared utilities: checkpoints, video files, logging, seeding."""
