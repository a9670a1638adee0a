"""minimuse: generate images like text (VQGAN tokens, MaskGIT/Muse sampling, MAR diffusion heads)."""
