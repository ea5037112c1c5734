# The CUDA backend (native/cuda), compiled into moeserve_engine when a toolkit is found.
# MOESERVE_CUDA=0 skips it, MOESERVE_CUDA=1 requires it; unset: built where nvcc is found.
# (Owned by the CUDA backend's build; this placeholder builds the CPU-only engine.)
