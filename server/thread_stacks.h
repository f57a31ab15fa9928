#pragma once

#include <cstddef>

namespace kdeserve::server {

/// Bytes of static thread-local storage of the libraries the process loaded at start (their
/// PT_TLS segments, aligned): glibc takes this much out of every new thread's stack.
/// thread_stacks.cpp also defines pthread_attr_setstacksize, which adds it to a requested size.
std::size_t static_tls_bytes();

}  // namespace kdeserve::server
