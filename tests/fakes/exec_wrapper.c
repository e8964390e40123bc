/* A static ELF executable for the tests: it runs SCRIPT with INTERPRETER (both fixed at build time) and
 * sets FAKE_BENCHMARK_MODEL_TOOL=TOOL. Built for this machine, it is what a benchmark binary must be for the
 * fake adb device (whose ABI is this machine's): an ELF of that ABI with no dynamic loader, so the stand-in
 * script tests/fakes/benchmark_model passes the real ELF check without any test-only bypass.
 *
 *   cc -static -O1 -DINTERPRETER='"/usr/bin/python3"' -DSCRIPT='"tests/fakes/benchmark_model"' \
 *      -DTOOL='"tflite"' -o benchmark_model tests/fakes/exec_wrapper.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (args == NULL) return 127;
  args[0] = INTERPRETER;
  args[1] = SCRIPT;
  for (int i = 1; i < argc; i++) args[i + 1] = argv[i];
  setenv("FAKE_BENCHMARK_MODEL_TOOL", TOOL, 1);
  execv(INTERPRETER, args);
  perror(INTERPRETER);
  return 127;
}
