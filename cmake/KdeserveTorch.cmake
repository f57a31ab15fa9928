# Finds LibTorch and defines the one target the project links for it: kdeserve::torch.
#
#   KDESERVE_TORCH = venv    (default) the PyPI torch wheel in KDESERVE_VENV (scripts/install_deps.sh
#                            installs torch 2.11 there from requirements/torch.txt);
#                    <path>  a LibTorch 2.x prefix (an unpacked libtorch zip or another wheel's
#                            torch/ folder, e.g. a GPU machine's pip PyTorch).
# Debian's libtorch-dev 1.13 is no longer supported: LibTorch 2.11 was measured 1.3-2x faster
# here, has SDPA, and gives an image of about the same size (bench/RESULTS.md).
#
# CPU builds (KDESERVE_WITH_CUDA=OFF) link only c10 and torch_cpu, and need no CUDA toolkit even
# when the LibTorch was built with CUDA (the wheel's TorchConfig insists on one): the process then
# never loads libtorch_cuda or cuDNN. CUDA builds go through the package's TorchConfig, which links
# torch_cuda and c10_cuda and finds the CUDA toolkit.
#
# Sets KDESERVE_TORCH_VERSION (e.g. 2.11.0), KDESERVE_TORCH_PREFIX (the folder holding include/
# and lib/), KDESERVE_TORCH_INCLUDE_DIRS and KDESERVE_TORCH_HAS_CUDA (the LibTorch has
# libtorch_cuda).
include_guard(GLOBAL)

set(KDESERVE_TORCH "venv" CACHE STRING
    "LibTorch: venv (the PyPI wheel in KDESERVE_VENV) or a LibTorch 2.x prefix path")
include(KdeserveVenv)  # KDESERVE_VENV

# The LibTorch prefix and its CMake package folder.
if(KDESERVE_TORCH STREQUAL "venv")
  set(_python "${KDESERVE_VENV}/bin/python")
  if(NOT EXISTS "${_python}")
    message(FATAL_ERROR "kdeserve: no virtual environment at ${KDESERVE_VENV}; run "
                        "`bash scripts/install_deps.sh` (or pass -DKDESERVE_TORCH=<LibTorch prefix>)")
  endif()
  # Located without importing torch: `install_deps.sh --torch cpu` leaves out its Python deps.
  execute_process(
    COMMAND "${_python}" -c
            "import importlib.util as u; s = u.find_spec('torch'); print(s.submodule_search_locations[0])"
    OUTPUT_VARIABLE KDESERVE_TORCH_PREFIX RESULT_VARIABLE _rc ERROR_VARIABLE _err
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "kdeserve: no torch in ${KDESERVE_VENV} (${_err}); run "
                        "`bash scripts/install_deps.sh`")
  endif()
  set(_torch_package_dir "${KDESERVE_TORCH_PREFIX}/share/cmake/Torch")
else()
  get_filename_component(KDESERVE_TORCH_PREFIX "${KDESERVE_TORCH}" ABSOLUTE)
  set(_torch_package_dir "${KDESERVE_TORCH_PREFIX}/share/cmake/Torch")
endif()

set(KDESERVE_TORCH_HAS_CUDA OFF)
if(EXISTS "${KDESERVE_TORCH_PREFIX}/lib/libtorch_cuda.so")
  set(KDESERVE_TORCH_HAS_CUDA ON)
endif()

add_library(kdeserve_torch INTERFACE)
add_library(kdeserve::torch ALIAS kdeserve_torch)

if(NOT KDESERVE_WITH_CUDA)
  # CPU-only link against the prefix's c10 and torch_cpu.
  set(KDESERVE_TORCH_INCLUDE_DIRS "${KDESERVE_TORCH_PREFIX}/include"
                                  "${KDESERVE_TORCH_PREFIX}/include/torch/csrc/api/include")
  foreach(_lib torch_cpu c10)
    set(_path "${KDESERVE_TORCH_PREFIX}/lib/lib${_lib}.so")
    if(NOT EXISTS "${_path}")
      message(FATAL_ERROR "kdeserve: ${_path} not found: ${KDESERVE_TORCH_PREFIX} is no LibTorch")
    endif()
    list(APPEND _torch_libs "${_path}")
  endforeach()
  target_include_directories(kdeserve_torch SYSTEM INTERFACE ${KDESERVE_TORCH_INCLUDE_DIRS})
  target_link_libraries(kdeserve_torch INTERFACE ${_torch_libs})
  # The wheel's libraries find their neighbours (libgomp, and the nvidia/ wheels' CUDA runtime
  # that libtorch_cpu's profiler links) through their own $ORIGIN rpath; the executables only
  # need the folder itself.
  target_link_options(kdeserve_torch INTERFACE "LINKER:-rpath,${KDESERVE_TORCH_PREFIX}/lib")
else()
  # The wheel's Caffe2Config makes protobuf::libprotobuf an empty alias when no such target exists
  # yet (its protobuf is inside libtorch_cpu); proto/ links Debian's libprotobuf by path, so the
  # LibTorch targets keep linking no protobuf at all.
  # CUDA builds go through the package's TorchConfig. It searches the default paths before its
  # own folder for Caffe2Config and for its libraries, so another LibTorch installed in /usr
  # (Debian's libtorch-dev) would be mixed in: pin them.
  set(Caffe2_DIR "${KDESERVE_TORCH_PREFIX}/share/cmake/Caffe2" CACHE PATH "" FORCE)
  foreach(_pair "TORCH_LIBRARY;torch" "c10_LIBRARY;c10" "C10_CUDA_LIBRARY;c10_cuda"
                "kineto_LIBRARY;kineto")
    list(GET _pair 0 _var)
    list(GET _pair 1 _lib)
    if(EXISTS "${KDESERVE_TORCH_PREFIX}/lib/lib${_lib}.so")
      set(${_var} "${KDESERVE_TORCH_PREFIX}/lib/lib${_lib}.so" CACHE FILEPATH "" FORCE)
    endif()
  endforeach()
  if(NOT KDESERVE_TORCH_HAS_CUDA)
    message(FATAL_ERROR "kdeserve: KDESERVE_WITH_CUDA=ON needs a LibTorch with CUDA; "
                        "${KDESERVE_TORCH_PREFIX} has no libtorch_cuda")
  endif()
  # Torch's CMake sets the nvcc -gencode flags from TORCH_CUDA_ARCH_LIST (not from
  # CMAKE_CUDA_ARCHITECTURES); without a GPU to detect it would build eleven architectures.
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA architectures: A100 (8.0), H100/H200 (9.0)")
  # Torch's cuda.cmake warns about, then switches off, CMAKE_CUDA_ARCHITECTURES (it sets
  # FindCUDA's flags instead); the project's own .cu files need it, so keep it aside.
  set(_cuda_architectures "${CMAKE_CUDA_ARCHITECTURES}")
  unset(CMAKE_CUDA_ARCHITECTURES)
  find_package(Torch REQUIRED PATHS "${_torch_package_dir}" NO_DEFAULT_PATH)
  if(_cuda_architectures)
    set(CMAKE_CUDA_ARCHITECTURES "${_cuda_architectures}")
  endif()
  set(KDESERVE_TORCH_INCLUDE_DIRS ${TORCH_INCLUDE_DIRS})
  # torch_cpu and torch_cuda (force-linked, so the CUDA kernels register), not the umbrella
  # libtorch.so: the wheel's exports a partial copy of std::filesystem that the executables
  # would bind to instead of libstdc++'s, and std::filesystem::remove_all crashed in it.
  target_link_libraries(kdeserve_torch INTERFACE torch_cpu_library torch_cuda_library)
  target_include_directories(kdeserve_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  # The executables NEED libcudart.so.13 themselves (CUDA::cudart). Their RUNPATH names the
  # wheel's CUDA runtime first, the copy libtorch_cuda finds through its own RUNPATH, so that the
  # process loads that one and not the compiling toolkit's (/usr/local/cuda, or the links of
  # cmake/KdeserveCudaToolkit.cmake); the images ship the wheel's.
  get_filename_component(_wheel_cuda_lib "${KDESERVE_TORCH_PREFIX}/../nvidia/cu13/lib" ABSOLUTE)
  if(EXISTS "${_wheel_cuda_lib}/libcudart.so.13")
    target_link_options(kdeserve_torch INTERFACE
                        "LINKER:-rpath,${KDESERVE_TORCH_PREFIX}/lib:${_wheel_cuda_lib}")
  endif()
  if(TORCH_CXX_FLAGS)
    separate_arguments(_torch_cxx_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
    target_compile_options(kdeserve_torch INTERFACE $<$<COMPILE_LANGUAGE:CXX>:${_torch_cxx_flags}>)
  endif()
endif()

# The version from the MAJOR/MINOR/PATCH macros (TorchConfig does not export it reliably; 2.x
# keeps them in torch/headeronly/version.h).
set(KDESERVE_TORCH_VERSION "unknown")
foreach(_dir ${KDESERVE_TORCH_INCLUDE_DIRS})
  foreach(_h "${_dir}/torch/headeronly/version.h" "${_dir}/torch/version.h")
    if(KDESERVE_TORCH_VERSION STREQUAL "unknown" AND EXISTS "${_h}")
      file(STRINGS "${_h}" _lines REGEX "#define TORCH_VERSION_(MAJOR|MINOR|PATCH) ")
      if(_lines MATCHES "MAJOR ([0-9]+).*MINOR ([0-9]+).*PATCH ([0-9]+)")
        set(KDESERVE_TORCH_VERSION "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}.${CMAKE_MATCH_3}")
      endif()
    endif()
  endforeach()
endforeach()
if(KDESERVE_TORCH_VERSION VERSION_GREATER_EQUAL 2.13 AND CMAKE_CXX_STANDARD LESS 20)
  message(FATAL_ERROR "kdeserve: LibTorch ${KDESERVE_TORCH_VERSION} headers need C++20; the "
                      "project is C++17 and pins torch 2.11 (requirements/torch.in)")
endif()
message(STATUS "kdeserve: LibTorch ${KDESERVE_TORCH_VERSION} (${KDESERVE_TORCH}) at "
               "${KDESERVE_TORCH_PREFIX}, CUDA in LibTorch: ${KDESERVE_TORCH_HAS_CUDA}, "
               "linked: ${KDESERVE_WITH_CUDA}")
