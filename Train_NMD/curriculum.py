"""The sigma / alpha curriculum of the NMD (numpy only: shared by Train_NMD/train.py and
tools/torch_mirror)."""
import numpy as np

HISTORY = 100  # capacity of the accuracy windows kept in the checkpoint (acc_window <= 100)


def curriculum_update(sigma, alpha, noise_hist, blur_hist, acc_noise, acc_blur, args):
    """One validation's step of the curriculum; accuracies in percent.

    Each window keeps the last `acc_window` accuracies measured at the current difficulty.
    When a window is full and its mean is >= `acc_threshold`, that task is made harder
    (sigma *= sigma_decay; alpha = min(alpha + alpha_step, alpha_max)) and its window starts
    anew. Returns (sigma, alpha, noise_hist, blur_hist).

    The original differs (README, "Deviations from the original"): its windows start as ten
    zeros and slide without ever being cleared, and it raises alpha only when the blur mean
    equals 95.0 exactly.
    """
    noise_hist = (list(noise_hist) + [acc_noise])[-args.acc_window:]
    blur_hist = (list(blur_hist) + [acc_blur])[-args.acc_window:]
    if len(noise_hist) == args.acc_window and np.mean(noise_hist) >= args.acc_threshold:
        sigma, noise_hist = sigma * args.sigma_decay, []
    if len(blur_hist) == args.acc_window and np.mean(blur_hist) >= args.acc_threshold:
        alpha, blur_hist = min(alpha + args.alpha_step, args.alpha_max), []
    return sigma, alpha, noise_hist, blur_hist
