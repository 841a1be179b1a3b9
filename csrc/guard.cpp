// Frees an error message that a shim handed over (see guard.h).
#include "guard.h"

extern "C" void span_marker_free_error(char* error) { std::free(error); }
