# KDESERVE_VENV: the project virtual environment made by scripts/install_deps.sh ($KDESERVE_VENV as
# the installer reads it, else .venv in the checkout). LibTorch (KdeserveTorch) and, for CUDA
# builds without a system toolkit, nvcc and the CUDA headers (KdeserveCudaToolkit) come from it.
include_guard(GLOBAL)

if(DEFINED ENV{KDESERVE_VENV})
  get_filename_component(_venv_default "$ENV{KDESERVE_VENV}" ABSOLUTE BASE_DIR "${PROJECT_SOURCE_DIR}")
else()
  set(_venv_default "${PROJECT_SOURCE_DIR}/.venv")
endif()
set(KDESERVE_VENV "${_venv_default}" CACHE PATH
    "The project virtual environment made by scripts/install_deps.sh")

# kdeserve_venv_site_packages(<var>): the venv's site-packages folder (lib/python3.X/site-packages),
# or <var>-NOTFOUND.
function(kdeserve_venv_site_packages var)
  file(GLOB _dirs LIST_DIRECTORIES true "${KDESERVE_VENV}/lib/python3*/site-packages")
  if(_dirs)
    list(GET _dirs 0 _dir)
    set(${var} "${_dir}" PARENT_SCOPE)
  else()
    set(${var} "${var}-NOTFOUND" PARENT_SCOPE)
  endif()
endfunction()
