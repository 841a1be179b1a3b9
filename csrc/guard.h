// The one error boundary of the C++ shims: no exception crosses into Rust. A function that makes
// a tensor (or a handle) returns it, or null with libtorch's message in `*error`, which the Rust
// side (`src/ffi.rs`) takes and frees with `span_marker_free_error`; a function that returns a
// status returns `on_error` instead of throwing (or 1 with the message, `guarded_status_message`).
#pragma once

#include <cstdlib>
#include <cstring>
#include <exception>

extern "C" void span_marker_free_error(char* error);

namespace span_marker {

inline void set_error(char** error, const char* message) {
  if (error != nullptr) {
    *error = strdup(message);
  }
}

// `f()` (a pointer), or null with the exception's message in `*error`.
template <typename F>
auto guarded(char** error, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const std::exception& e) {
    set_error(error, e.what());
  } catch (...) {
    set_error(error, "unknown libtorch error");
  }
  return nullptr;
}

// `f()` (a status), or `on_error` if it throws.
template <typename F>
int guarded_status(int on_error, F&& f) {
  try {
    return f();
  } catch (...) {
    return on_error;
  }
}

// `f()` (a status, 0 for success), or 1 with the exception's message in `*error`.
template <typename F>
int guarded_status_message(char** error, F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    set_error(error, e.what());
  } catch (...) {
    set_error(error, "unknown libtorch error");
  }
  return 1;
}

}  // namespace span_marker
