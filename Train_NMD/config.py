"""Training constants of the Natural Manifold Discriminator (the paper's values). Each is
a flag of Train_NMD/main.py in lower case (--batch_size, --noise_sigma, ...)."""

SCALE = 4
PATCH_SIZE = 0               # HR patch side; 0 takes it from the TFRecord's sidecar
BATCH_SIZE = 32              # a quarter noisy, a quarter blurry, half clean
LEARNING_RATE = 1e-4
BETA1 = 0.9
NOISE_SIGMA = 0.1            # curriculum start: std of the DCT noise ...
SIGMA_DECAY = 0.8            # ... times 0.8 whenever the noise accuracy is high enough
ALPHA = 0.5                  # curriculum start: blur = alpha * HR + (1 - alpha) * ILR ...
ALPHA_STEP = 0.1             # ... plus 0.1 (at most ALPHA_MAX) whenever the blur accuracy is
ALPHA_MAX = 0.9
ACC_THRESHOLD = 95.0         # percent, compared with >= (the original: >= for sigma, == for alpha)
ACC_WINDOW = 10              # mean of the last 10 validations at the current difficulty (cleared
                             # after each change; the original's window slid and was never cleared)
VAL_INTERVAL = 100           # validate every 100 steps
VAL_PATCHES = 512            # at most this many validation patches per validation
MAX_STEPS = 1000000
SUMMARY_INTERVAL = 100
CHECKPOINT_INTERVAL = 10000
SEED = 0

TFRECORD_PATH = 'train_NMD_X4.tfrecord'
VAL_TFRECORD_PATH = 'train_NMD_X4_val.tfrecord'
CHECKPOINT_DIR = 'checkpoint'
