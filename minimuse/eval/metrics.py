"""Image metrics that need no network: PSNR."""
import torch


def as_image_batch(images: torch.Tensor) -> torch.Tensor:
    """(3, H, W) or (B, 3, H, W) -> (B, 3, H, W) float32, clipped to [-1, 1] as when saved as an image."""
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images (B, 3, H, W) or (3, H, W), got shape {tuple(images.shape)}")
    return images.float().clamp(-1.0, 1.0)


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: PSNR = 10 * log10(1 / MSE), with pixels mapped from
    [-1, 1] to [0, 1] so the peak value is 1. (B, 3, H, W) twice -> (B,); identical images give inf."""
    if x.shape != y.shape:
        raise ValueError(f"psnr needs images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    x01, y01 = (as_image_batch(x) + 1) / 2, (as_image_batch(y) + 1) / 2
    mse = (x01 - y01).pow(2).flatten(1).mean(dim=1)  # (B,)
    return 10 * torch.log10(1.0 / mse)
