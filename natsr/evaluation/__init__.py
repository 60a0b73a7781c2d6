"""Evaluation metrics: PSNR, SSIM, NIQE on Y, LPIPS, and the look measures (metrics.METRICS)."""
