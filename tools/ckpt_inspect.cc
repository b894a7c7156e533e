// ckpt-inspect: see tools/inspect.h and `ckpt-inspect --help`.
#include <unistd.h>

#include <iostream>

#include "inspect.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return ckptdb::RunInspect(args, std::cout, std::cerr, isatty(STDOUT_FILENO) != 0);
}
