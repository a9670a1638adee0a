"""Tokenizers: images (B, 3, H, W) <-> a grid of tokens, ids (B, h, w) or continuous latents (B, h, w, C).

    autoencoder.py  Autoencoder: conv encoder -> bottleneck -> conv decoder (VQGAN's), encode / decode
    quantizer.py    the vq bottleneck: nearest-code lookup, straight-through, EMA codes, dead-code restart
    continuous.py   the kl | plain bottleneck that gives MAR its continuous tokens
    losses.py       reconstruction, PatchGAN and the adaptive GAN weight
    lpips.py        the LPIPS perceptual distance, in plain torch
"""
