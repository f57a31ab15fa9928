# The CUDA toolkit of KDESERVE_WITH_CUDA builds: nvcc (CMAKE_CUDA_COMPILER), the CUDA headers and
# libcudart, for the project's .cu files, FindCUDAToolkit (CUDA::cudart) and the torch wheel's
# TorchConfig (which also runs the old FindCUDA).
#
#   KDESERVE_CUDA_TOOLKIT = auto   (default) CMAKE_CUDA_COMPILER or $CUDACXX when given; else
#                                  /usr/local/cuda when it has bin/nvcc; else nvcc on PATH; else
#                                  the PyPI wheels in KDESERVE_VENV
#                           venv   the PyPI wheels in KDESERVE_VENV: site-packages/nvidia/cu13,
#                                  installed by `scripts/install_deps.sh --cuda-toolkit`
#                                  (requirements/cuda-toolkit.txt: nvcc, crt, nvvm, cccl; the
#                                  runtime comes with torch)
#                           <dir>  a toolkit root: a CUDA installation, or such a wheel folder
#
# The wheels' folder {bin,include,lib,nvvm} is not a toolkit that nvcc and CMake can use as it is:
#   - nvcc.profile links from $(TOP)/lib64 and $(TOP)/lib64/stubs, and the wheels have lib/: the
#     CUDA compiler check and every link that needs libcudadevrt.a or libcudart_static.a fail on
#     a machine without another CUDA (a Debian 12 image);
#   - the shared libraries carry only their versioned names (libcudart.so.13), so find_library
#     finds none of them (CUDA::cudart, FindCUDA's CUDA_CUDART_LIBRARY: TorchConfig stops).
# For such a folder this module assembles, at configure time, a toolkit of symbolic links in the
# build tree, <build>/cuda-toolkit:
#   bin/    a link to each of the wheel's programs (and bin/crt), so that nvcc's $(TOP), taken from
#           the path it is called by, is this folder;
#   include, nvvm   links to the wheel's folders;
#   lib64/  a link to each of the wheel's libraries plus the unversioned names (libcudart.so ->
#           libcudart.so.13); lib -> lib64.
# and points CMake at it (CMAKE_CUDA_COMPILER, CUDAToolkit_ROOT, CUDA_TOOLKIT_ROOT_DIR). Nothing is
# written into the venv. The executables link libcudart.so.13 from the wheel's folder through
# that link, so their RUNPATH names <build>/cuda-toolkit/lib64; the images set their own.
# No version.json is needed: the version comes from `nvcc --version`. The toolkit has no driver
# stub (libcuda.so); nothing the project links needs CUDA::cuda_driver.
include_guard(GLOBAL)
include(KdeserveVenv)

set(KDESERVE_CUDA_TOOLKIT "auto" CACHE STRING
    "CUDA toolkit: auto, venv (the PyPI wheels in KDESERVE_VENV) or a toolkit root")

# kdeserve_cuda_wheel_root(<var>): KDESERVE_VENV's site-packages/nvidia/cu13 when it holds nvcc.
function(kdeserve_cuda_wheel_root var)
  kdeserve_venv_site_packages(_site)
  set(${var} "${var}-NOTFOUND" PARENT_SCOPE)
  if(_site AND EXISTS "${_site}/nvidia/cu13/bin/nvcc")
    set(${var} "${_site}/nvidia/cu13" PARENT_SCOPE)
  endif()
endfunction()

# kdeserve_cuda_assemble_toolkit(<wheel root> <out var>): the link farm described above.
function(kdeserve_cuda_assemble_toolkit wheel var)
  set(_tk "${CMAKE_BINARY_DIR}/cuda-toolkit")
  file(REMOVE_RECURSE "${_tk}")
  file(MAKE_DIRECTORY "${_tk}/bin" "${_tk}/lib64")
  file(GLOB _programs RELATIVE "${wheel}/bin" "${wheel}/bin/*")
  foreach(_p ${_programs})
    file(CREATE_LINK "${wheel}/bin/${_p}" "${_tk}/bin/${_p}" SYMBOLIC)
  endforeach()
  foreach(_d include nvvm)
    if(NOT EXISTS "${wheel}/${_d}")
      message(FATAL_ERROR "kdeserve: ${wheel} has no ${_d}/: install the CUDA toolkit wheels with "
                          "`bash scripts/install_deps.sh --cuda-toolkit`")
    endif()
    file(CREATE_LINK "${wheel}/${_d}" "${_tk}/${_d}" SYMBOLIC)
  endforeach()
  file(GLOB _libs RELATIVE "${wheel}/lib" "${wheel}/lib/*")
  foreach(_l ${_libs})
    file(CREATE_LINK "${wheel}/lib/${_l}" "${_tk}/lib64/${_l}" SYMBOLIC)
    if(_l MATCHES "^(lib[^.]+)\\.so\\.[0-9.]+$")
      # (a separate if: ${CMAKE_MATCH_1} in the same condition would be the previous match)
      set(_unversioned "${_tk}/lib64/${CMAKE_MATCH_1}.so")
      if(NOT EXISTS "${_unversioned}")
        file(CREATE_LINK "${_l}" "${_unversioned}" SYMBOLIC)
      endif()
    endif()
  endforeach()
  file(CREATE_LINK "lib64" "${_tk}/lib" SYMBOLIC)
  foreach(_need bin/nvcc include/cuda_runtime.h lib64/libcudart.so lib64/libcudart_static.a
                lib64/libcudadevrt.a nvvm/libdevice)
    if(NOT EXISTS "${_tk}/${_need}")
      message(FATAL_ERROR "kdeserve: the CUDA toolkit wheels in ${wheel} lack ${_need} "
                          "(requirements/cuda-toolkit.txt and torch's nvidia-cuda-runtime)")
    endif()
  endforeach()
  set(${var} "${_tk}" PARENT_SCOPE)
endfunction()

set(_cuda_root "")
if(KDESERVE_CUDA_TOOLKIT STREQUAL "auto")
  if(CMAKE_CUDA_COMPILER OR DEFINED ENV{CUDACXX})
    # given explicitly: CMake's own search
  elseif(EXISTS /usr/local/cuda/bin/nvcc)
    set(_cuda_root /usr/local/cuda)
  else()
    find_program(_nvcc_on_path nvcc)
    if(NOT _nvcc_on_path)
      kdeserve_cuda_wheel_root(_cuda_root)
      if(NOT _cuda_root)
        message(FATAL_ERROR "kdeserve: KDESERVE_WITH_CUDA=ON, but no CUDA toolkit: no "
                            "/usr/local/cuda, no nvcc on PATH, no CUDA toolkit wheels in "
                            "${KDESERVE_VENV}. Run `bash scripts/install_deps.sh --cuda-toolkit` "
                            "or pass -DKDESERVE_CUDA_TOOLKIT=<toolkit root>")
      endif()
    endif()
  endif()
elseif(KDESERVE_CUDA_TOOLKIT STREQUAL "venv")
  kdeserve_cuda_wheel_root(_cuda_root)
  if(NOT _cuda_root)
    message(FATAL_ERROR "kdeserve: KDESERVE_CUDA_TOOLKIT=venv, but ${KDESERVE_VENV} has no "
                        "site-packages/nvidia/cu13/bin/nvcc; run "
                        "`bash scripts/install_deps.sh --cuda-toolkit`")
  endif()
else()
  get_filename_component(_cuda_root "${KDESERVE_CUDA_TOOLKIT}" ABSOLUTE)
  if(NOT EXISTS "${_cuda_root}/bin/nvcc")
    message(FATAL_ERROR "kdeserve: KDESERVE_CUDA_TOOLKIT=${KDESERVE_CUDA_TOOLKIT} has no bin/nvcc")
  endif()
endif()

if(_cuda_root)
  # A wheel folder (no lib64/libcudart.so) becomes the assembled toolkit.
  file(GLOB _versioned_cudart "${_cuda_root}/lib/libcudart.so.*")
  if(NOT EXISTS "${_cuda_root}/lib64/libcudart.so" AND _versioned_cudart)
    set(_wheel_root "${_cuda_root}")
    kdeserve_cuda_assemble_toolkit("${_wheel_root}" _cuda_root)
    message(STATUS "kdeserve: CUDA toolkit from the PyPI wheels in ${_wheel_root}, assembled "
                   "as ${_cuda_root}")
  endif()
  set(CMAKE_CUDA_COMPILER "${_cuda_root}/bin/nvcc")
  set(CUDAToolkit_ROOT "${_cuda_root}")
  # TorchConfig's FindCUDA looks for nvcc on PATH and in $CUDA_HOME-like variables first.
  set(CUDA_TOOLKIT_ROOT_DIR "${_cuda_root}" CACHE PATH "The CUDA toolkit (KdeserveCudaToolkit)" FORCE)
  set(KDESERVE_CUDA_TOOLKIT_ROOT "${_cuda_root}")
endif()
