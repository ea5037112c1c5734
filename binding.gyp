# node-gyp description of the CPU-only addon (no CUDA backend, no tools/backend-ops), kept equivalent to native/CMakeLists.txt
# (the build `npm install` uses). gyp has no glob and no per-file flags: every .cpp under
# native/core, native/cpu and native/addon is listed by hand, and each SIMD kernel file
# sits in its own static library compiled for its ISA (CMake's COMPILE_OPTIONS).
# tests/unit/binding-gyp.test.ts fails when a file or an ISA flag is missing or stale.
# CI builds it in a scratch copy (node-gyp always writes ./build, cmake-js's folder): .ci/run.
# The kernel libraries silence -W(maybe-)uninitialized: node's -Wall trips GCC 12 on the
# _mm512_undefined_*() inside its own intrinsic headers (GCC bug 105593), 36 false alarms.
{
  "target_defaults": {
    "include_dirs": [
      "<!(node -p \"require('node-addon-api').include_dir\")",
      "native"
    ],
    "defines": [
      "NAPI_VERSION=8",
      "NODE_ADDON_API_DISABLE_DEPRECATED",
      "NAPI_CPP_EXCEPTIONS"
    ],
    "cflags!": ["-fno-exceptions", "-O0", "-O2"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20", "-O0", "-O2"],
    "cflags": ["-O3", "-fno-math-errno", "-fPIC"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-O3", "-fno-math-errno"],
    "xcode_settings": {
      "GCC_ENABLE_CPP_EXCEPTIONS": "YES",
      "GCC_ENABLE_CPP_RTTI": "YES",
      "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
      "GCC_OPTIMIZATION_LEVEL": "3"
    }
  },
  "targets": [
    {
      "target_name": "moeserve_avx2",
      "type": "static_library",
      "sources": ["native/cpu/kernels-avx2.cpp"],
      "cflags_cc": ["-mavx2", "-mfma", "-mf16c", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
    },
    {
      "target_name": "moeserve_avx512",
      "type": "static_library",
      "sources": ["native/cpu/kernels-avx512.cpp"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
    },
    {
      "target_name": "moeserve_avx512bf16",
      "type": "static_library",
      "sources": ["native/cpu/kernels-avx512bf16.cpp"],
      "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx2", "-mfma", "-mf16c", "-Wno-maybe-uninitialized", "-Wno-uninitialized"]
    },
    {
      "target_name": "moeserve",
      "dependencies": ["moeserve_avx2", "moeserve_avx512", "moeserve_avx512bf16"],
      "sources": [
        "native/addon/addon.cpp",
        "native/addon/js-convert.cpp",
        "native/addon/model-wrap.cpp",
        "native/core/backend-factory.cpp",
        "native/core/coded-bf16.cpp",
        "native/core/dummy-weights.cpp",
        "native/core/json.cpp",
        "native/core/model.cpp",
        "native/core/safetensors.cpp",
        "native/core/sampler.cpp",
        "native/core/weights.cpp",
        "native/cpu/attention-cpu.cpp",
        "native/cpu/backend-cpu.cpp",
        "native/cpu/coding-cpu.cpp",
        "native/cpu/cpu-features.cpp",
        "native/cpu/kernels-scalar.cpp",
        "native/cpu/moe-cpu.cpp",
        "native/cpu/place-cpu.cpp",
        "native/cpu/sample-cpu.cpp",
        "native/cpu/thread-pool.cpp"
      ],
      "libraries": ["-lpthread"]
    }
  ]
}
