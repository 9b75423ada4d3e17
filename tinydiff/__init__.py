"""tinydiff: DDPM diffusion built on the from-scratch `autograd` engine."""

__version__ = "0.1.0"
