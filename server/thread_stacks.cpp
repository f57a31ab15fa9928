// Thread stacks that fit the process's static TLS.
//
// Why: civetweb (the HTTP server of prometheus-cpp's Exposer; Debian's libcivetweb1) starts its
// threads with a fixed stack, pthread_attr_setstacksize(attr, 102400), set at its build. glibc
// carves each thread's static TLS out of the stack it is given (glibc bug 11787), and the CUDA
// build loads libraries with ~190 KiB of it (cuBLASLt alone 92 KiB; the CPU build ~30 KiB):
// pthread_create fails and the Exposer throws "null context when constructing CivetServer", so
// the server cannot start. This definition interposes libc's for every library in the process
// (the executables export it) and adds the static TLS to the requested size, which is what the
// caller meant.
#include "server/thread_stacks.h"

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <cerrno>

namespace kdeserve::server {
namespace {

int add_tls_segment(dl_phdr_info* info, std::size_t, void* data) {
  auto* total = static_cast<std::size_t*>(data);
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_TLS) {
      const std::size_t align = ph.p_align ? ph.p_align : 1;
      *total = (*total + align - 1) / align * align + ph.p_memsz;
    }
  }
  return 0;
}

}  // namespace

std::size_t static_tls_bytes() {
  static const std::size_t bytes = [] {
    std::size_t total = 0;
    dl_iterate_phdr(add_tls_segment, &total);
    return total;
  }();
  return bytes;
}

}  // namespace kdeserve::server

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, std::size_t stacksize) noexcept {
  using Fn = int (*)(pthread_attr_t*, std::size_t);
  static const Fn libc_setstacksize =
      reinterpret_cast<Fn>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (libc_setstacksize == nullptr) return ENOSYS;
  return libc_setstacksize(attr, stacksize + kdeserve::server::static_tls_bytes());
}
