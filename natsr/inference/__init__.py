"""Running a network: sr.Generator (the inference graph, whole or tiled under a memory budget),
tiling, memory; test.py's job, upscaler, per-image pipeline and report."""
