# The CUDA backend (native/cuda), compiled into moeserve_engine when a toolkit is found.
# MOESERVE_CUDA=0 skips it, MOESERVE_CUDA=1 requires it (configure fails naming what is missing); unset: built
# where nvcc is found. nvcc is taken from MOESERVE_NVCC or CUDACXX when set, else PATH, else /usr/local/cuda/bin.
# Included by CMakeLists.txt after moeserve_engine is defined.
set(MOESERVE_CUDA_MODE "$ENV{MOESERVE_CUDA}")
if(MOESERVE_CUDA_MODE STREQUAL "0")
  message(STATUS "moeserve: CUDA backend skipped (MOESERVE_CUDA=0)")
  return()
endif()

# Compiled for Ampere (A100), Ada (L40S) and Hopper (H100/H200, sm_90a); the compute_80 PTX lets newer GPUs JIT.
# sm_90a needs the -gencode form: nvcc 13's -arch=sm_90a shorthand fails in ptxas.
set(MOESERVE_CUDA_ARCHS "sm_80 sm_89 sm_90a")
set(MOESERVE_CUDA_GENCODE
  -gencode=arch=compute_80,code=sm_80
  -gencode=arch=compute_89,code=sm_89
  -gencode=arch=compute_90a,code=sm_90a
  -gencode=arch=compute_80,code=compute_80)

function(moeserve_cuda_missing why)
  if(MOESERVE_CUDA_MODE STREQUAL "1")
    message(FATAL_ERROR "moeserve: MOESERVE_CUDA=1 requires the CUDA backend, but ${why}. Install the CUDA toolkit "
      "(nvcc, 12.x or 13.x) and put nvcc on PATH, or point MOESERVE_NVCC (or CUDACXX) at it, or set MOESERVE_CUDA=0 "
      "for a CPU-only build.")
  endif()
  message(STATUS "moeserve: CUDA backend not built: ${why} (set MOESERVE_CUDA=1 to require it)")
endfunction()

if(DEFINED ENV{MOESERVE_NVCC})
  set(MOESERVE_NVCC "$ENV{MOESERVE_NVCC}")
elseif(DEFINED ENV{CUDACXX})
  set(MOESERVE_NVCC "$ENV{CUDACXX}")
else()
  find_program(MOESERVE_NVCC_FOUND NAMES nvcc PATHS /usr/local/cuda/bin)
  set(MOESERVE_NVCC "${MOESERVE_NVCC_FOUND}")
endif()
if(NOT MOESERVE_NVCC OR NOT EXISTS "${MOESERVE_NVCC}")
  moeserve_cuda_missing("no nvcc (CUDA toolkit compiler) was found on PATH or at /usr/local/cuda/bin/nvcc")
  return()
endif()

# check_language tries the compiler in a throw-away project (it finds nvcc through CUDACXX), so a broken
# toolkit makes an auto-detecting build CPU-only instead of failing. A failed try caches CMAKE_CUDA_COMPILER as
# NOTFOUND, and check_language never tries again while it is defined: drop it so a fixed toolkit is found.
if(DEFINED CMAKE_CUDA_COMPILER AND NOT CMAKE_CUDA_COMPILER)
  unset(CMAKE_CUDA_COMPILER CACHE)
  unset(CMAKE_CUDA_COMPILER)
endif()
if(NOT DEFINED CMAKE_CUDA_COMPILER)
  set(ENV{CUDACXX} "${MOESERVE_NVCC}")
endif()
include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  moeserve_cuda_missing("the CUDA toolkit at ${MOESERVE_NVCC} could not compile a test project")
  return()
endif()

set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
set(CMAKE_CUDA_ARCHITECTURES OFF)  # the -gencode flags below choose them
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

file(GLOB CUDA_SRC CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/cuda/*.cu ${CMAKE_SOURCE_DIR}/cuda/*.cpp)
target_sources(moeserve_engine PRIVATE ${CUDA_SRC})
set_target_properties(moeserve_engine PROPERTIES CUDA_ARCHITECTURES OFF CUDA_RUNTIME_LIBRARY Static)
# No --use_fast_math: expf, sqrtf and division stay IEEE so the kernels track the CPU reference.
target_compile_options(moeserve_engine PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-O3 ${MOESERVE_CUDA_GENCODE}>)
target_compile_definitions(moeserve_engine PUBLIC MOESERVE_WITH_CUDA=1)
target_compile_definitions(moeserve_engine PRIVATE "MOESERVE_CUDA_ARCHS=\"${MOESERVE_CUDA_ARCHS}\"")
# The runtime is linked statically so the addon loads on a machine with no driver (cuda_info() then says why).
# PUBLIC: the addon and tools get the runtime and its headers.
target_link_libraries(moeserve_engine PUBLIC CUDA::cudart_static)
message(STATUS "moeserve: CUDA backend enabled (${CMAKE_CUDA_COMPILER}, CUDA ${CUDAToolkit_VERSION}, ${MOESERVE_CUDA_ARCHS})")
