"""Training constants of FRSR and NatSR (the paper's values). Every constant can be
overridden on the command line of main.py by a flag of the same name in lower case,
e.g. --batch_size 16 --learning_rate 1e-4. PATCH_SIZE is the exception: the patch size is
the TFRecord's (its sidecar), and --patch_size, when given, only checks it."""

MODEL = 'NatSR'              # 'NatSR' (fine-tuning with NMD + RaGAN) or 'FRSR' (L1 only)
ARCH = 'FRACTAL'             # the generator network (model.GENERATORS)
SCALE = 4
PATCH_SIZE = 48 * SCALE      # the paper's HR patch side (LR: PATCH_SIZE // SCALE); training uses the TFRecord's
BATCH_SIZE = 32
LEARNING_RATE = 2e-4
BETA1 = 0.9
LR_DECAY_STEPS = 100000      # x LR_DECAY_RATE every LR_DECAY_STEPS iterations (staircase) ...
LR_DECAY_RATE = 0.1
LR_MIN = 1e-4                # ... never below LR_MIN
NAT_WEIGHT = 1e-3            # L = L_recon + NAT_WEIGHT * L_nat + GAN_WEIGHT * L_G
GAN_WEIGHT = 1e-3
EMA_DECAY = 0.0              # > 0: also keep an exponential moving average of GEN's weights (an option,
                             # not the paper's; --export then ships the average)
D_SHIFT = 0                  # > 0: DIS sees each HR / SR patch cropped at a random offset in [0, D_SHIFT]
                             # (an option, not the paper's: see README, "The dot grid")
GRID_WEIGHT = 0.0            # > 0: + GRID_WEIGHT * train.grid_loss (SR - HR at the upsampler's lattice
                             # frequencies) in NatSR's G loss (an option, not the paper's: "The dot grid")
LF_WEIGHT = 0.0              # > 0: + LF_WEIGHT * train.lf_loss (SR - HR averaged over SCALE x SCALE blocks:
                             # tone and colour at LR resolution) in NatSR's G loss (an option, not the paper's)
DEGRADE = None               # e.g. 'jpeg:30-95': each LR patch degraded on the fly (JPEG, noise, blur), a
                             # share left clean (natsr/training/degradation.py; an option, not the paper's)
MAX_STEPS = 1000000
SUMMARY_INTERVAL = 1000
CHECKPOINT_INTERVAL = 10000

TFRECORD_PATH = 'train_SR_X4.tfrecord'
CHECKPOINT_DIR = 'checkpoint'
FRSR_CHECKPOINT = 'Model/FRSR'   # GEN initialisation of NatSR
INIT_CHECKPOINT = None           # FRSR: start GEN from this checkpoint where names and shapes match
                                 # (e.g. the x4 Model/FRSR for an x2 / x3 FRSR: body, conv_out, ...)
NMD_CHECKPOINT = 'Model/NMD'     # CLASSIFIER of NatSR (frozen)
SEED = 0                         # graph-level random seed and data shuffling seed
