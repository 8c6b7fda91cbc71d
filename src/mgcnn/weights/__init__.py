"""The trained weights that ship with mgcnn: one Hugging Face Hub-layout folder per ``ARCH.TAG`` and the manifest
``SHA256SUMS`` (read by :mod:`mgcnn.zoo`). ``python -m mgcnn.weights`` rewrites the manifest (maintainers)."""
