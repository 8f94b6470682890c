# One interface target that carries the project's warning flags; every project target links it.
add_library(nbu_warnings INTERFACE)
target_compile_options(nbu_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
  -Wold-style-cast -Woverloaded-virtual -Wdouble-promotion -Wformat=2
  -Wimplicit-fallthrough -Wmisleading-indentation -Wduplicated-cond -Wlogical-op)
# GCC 12 reports std::string concatenation as overlapping memcpy (GCC bug 105329): false positive.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(nbu_warnings INTERFACE -Wno-restrict)
endif()
if(NBU_WERROR)
  target_compile_options(nbu_warnings INTERFACE -Werror)
endif()
