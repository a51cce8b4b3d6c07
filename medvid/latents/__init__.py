"""Video VAEs and cached latents: ``load_vae`` / ``VideoVAE`` wrap diffusers' CogVideoX VAE (or any
encode/decode module) in medvid's ``(B, F, C, h, w)`` layout; ``medvid encode`` caches latents."""

from medvid.latents.vae import VideoVAE, latent_frames, load_vae, tiny_vae, tiny_vae_config

__all__ = ["VideoVAE", "latent_frames", "load_vae", "tiny_vae", "tiny_vae_config"]

from medvid.latents.fcvae import CompensationConfig, FrequencyCompensatedVAE, compensated_video_vae  # noqa: E402

__all__ += ["CompensationConfig", "FrequencyCompensatedVAE", "compensated_video_vae"]
